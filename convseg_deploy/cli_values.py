"""Parsers of command-line values shared by every command module (convseg_deploy, exporters,
benchmarks): only click-free Python here, so importing it costs nothing at ``--help``."""

from __future__ import annotations


def csv_list(value: str | None) -> list[str]:
    """``"a, b,,c"`` -> ``["a", "b", "c"]``; None or "" -> ``[]``."""
    return [v.strip() for v in value.split(",") if v.strip()] if value else []
