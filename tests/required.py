"""What `make test` installs, checked before the suite runs: a test that skips where a part is
missing (the real tritonserver, OpenVINO, FFmpeg, GStreamer) would otherwise pass silently on a
machine where the install broke. `make test` names the parts in CONVSEG_TEST_REQUIRE; a plain
`pytest` run names none and skips as before."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
from typing import Callable

ENV = "CONVSEG_TEST_REQUIRE"


def _tritonserver() -> str | None:
    from convseg_deploy.benchmarks.triton_local import find_install
    from convseg_deploy.errors import MissingDependencyError

    try:
        find_install()
    except MissingDependencyError as exc:
        return str(exc)
    return None


def _module(name: str) -> Callable[[], str | None]:
    return lambda: None if importlib.util.find_spec(name) else f"Python module {name} is not installed"


def _ffmpeg() -> str | None:
    return None if shutil.which("ffmpeg") else "the ffmpeg program is not on PATH"


def _gstreamer() -> str | None:
    if not shutil.which("gst-launch-1.0"):
        return "gst-launch-1.0 is not on PATH"
    probe = subprocess.run(["/usr/bin/python3", "-c", "import gi; gi.require_version('Gst', '1.0')"],
                           capture_output=True, text=True)
    return None if probe.returncode == 0 else "the system Python has no GStreamer bindings (python3-gi)"


CHECKS: dict[str, Callable[[], str | None]] = {
    "tritonserver": _tritonserver,
    "openvino": _module("openvino"),
    "ffmpeg": _ffmpeg,
    "gstreamer": _gstreamer,
}


def missing_parts(names: str) -> list[str]:
    """'part: why' for each named part that is missing; an unknown name is an error of its own."""
    problems = []
    for name in filter(None, (n.strip() for n in names.split(","))):
        check = CHECKS.get(name)
        why = f"unknown part (known: {', '.join(CHECKS)})" if check is None else check()
        if why:
            problems.append(f"{name}: {why}")
    return problems


def check_required() -> list[str]:
    return missing_parts(os.environ.get(ENV, ""))
