"""benchmarks/gpu_check.sh stops at the first failed step and requires TensorRT rows.

The script runs against a stand-in ``convseg-deploy`` on PATH that logs its arguments and fails
on the step named in FAIL_ON, so the order of steps and the exit status are checked without a GPU.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_check.sh"
STAND_IN = """#!/usr/bin/env bash
echo "$*" >> "$CALL_LOG"
if [[ "$1" == "$FAIL_ON" && "$*" != *--help* ]]; then echo "stand-in: $1 failed" >&2; exit 3; fi
if [[ "$1" == synth ]]; then mkdir -p "$2/images"; fi
exit 0
"""


def run_check(tmp_path: Path, fail_on: str = "") -> tuple[subprocess.CompletedProcess, list[str]]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    cli = bin_dir / "convseg-deploy"
    cli.write_text(STAND_IN)
    cli.chmod(0o755)
    log = tmp_path / "calls.log"
    log.unlink(missing_ok=True)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "CALL_LOG": str(log), "FAIL_ON": fail_on}
    proc = subprocess.run(["bash", str(SCRIPT), "--checkpoint", str(tmp_path / "m.pt"), "--work", str(tmp_path / "w")],
                          capture_output=True, text=True, env=env, timeout=60)
    calls = log.read_text().splitlines() if log.exists() else []
    return proc, [c for c in calls if not c.endswith("--help")]


def test_all_steps_run_and_the_bench_requires_tensorrt_rows(tmp_path: Path) -> None:
    proc, calls = run_check(tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert [c.split()[0] for c in calls] == ["synth", "export", "build-engine", "build-engine", "bench"]
    assert "model.fp16.onnx" in calls[2] and "model.int8.onnx" in calls[3] and "--device 0" in calls[3]
    bench = calls[-1]
    assert "--require tensorrt" in bench and "--iters 200" in bench and "--warmup-time 2" in bench
    assert "gpu_check passed" in proc.stdout


@pytest.mark.parametrize(("step", "ran"), [("export", 2), ("build-engine", 3), ("bench", 5)])
def test_the_first_failed_step_stops_the_check(tmp_path: Path, step: str, ran: int) -> None:
    proc, calls = run_check(tmp_path, fail_on=step)
    assert proc.returncode == 3
    assert len(calls) == ran and calls[-1].startswith(step)  # nothing after the failed step
    assert "gpu_check FAILED" in proc.stderr and "gpu_check passed" not in proc.stdout
