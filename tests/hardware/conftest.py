"""The five CPU kinds the development and CI machines have had, as their /proc/cpuinfo."""

from __future__ import annotations

from pathlib import Path

import pytest

CPUINFO = Path(__file__).parent / "cpuinfo"
KINDS = ("intel-xeon-amx", "intel-xeon-avx512-vnni", "amd-epyc-zen2", "amd-epyc-zen4", "amd-epyc-zen5")


@pytest.fixture(params=KINDS)
def cpu_kind(request: pytest.FixtureRequest) -> tuple[str, Path]:
    """(kind, path of its /proc/cpuinfo)."""
    return request.param, CPUINFO / f"{request.param}.txt"
