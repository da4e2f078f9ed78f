"""``--pin-cores``: the split of the cores, the threads that land on each side in a real run, the
runtime's workers following the thread that opened the session, and the refusals."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from convseg_deploy.cli import main
from convseg_deploy.errors import ConvSegError
from convseg_deploy.live.cores import pin_this_thread, plan_cores, this_thread_cores
from tests.faults.helpers import error_line
from tests.live.conftest import only_summary, read_run

CORES = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
two_cores = pytest.mark.skipif(len(CORES) < 2, reason="pinning needs two cores this process may use")


def test_the_model_takes_the_last_cores_and_the_video_the_rest() -> None:
    assert plan_cores(1, {0, 1}).as_dict() == {"model": [1], "video": [0]}
    plan = plan_cores(3, {0, 1, 2, 3, 4, 5, 6, 7})
    assert plan.as_dict() == {"model": [5, 6, 7], "video": [0, 1, 2, 3, 4]}
    assert plan.describe() == "model on cores 5,6,7, video on cores 0,1,2,3,4"
    assert plan_cores(1, {2, 9}).as_dict() == {"model": [9], "video": [2]}  # a taskset's cores, not 0..n-1


def test_a_split_that_leaves_the_video_no_core_is_refused() -> None:
    with pytest.raises(ConvSegError, match=r"^--pin-cores with --threads 2: this process may use 2 core\(s\) "
                                           r"\(0,1\), which leaves none for the video; use --threads 1 or fewer"):
        plan_cores(2, {0, 1})
    with pytest.raises(ConvSegError, match=r"^--pin-cores: this process may use one core only \(3\)"):
        plan_cores(1, {3})
    with pytest.raises(ConvSegError, match=r"^--pin-cores needs --threads N"):
        plan_cores(None, {0, 1})


@two_cores
def test_a_pinned_run_puts_the_model_on_its_core_and_the_rest_on_the_others(
        tiny_model: Path, clip: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from convseg_deploy.live.segmenters import RunnerSegmenter

    seen: dict[str, set[frozenset[int]]] = {"prepare": set(), "infer": set(), "finish": set()}
    for part in seen:
        real = getattr(RunnerSegmenter, part)

        def spy(self, *args, _real=real, _part=part):  # noqa: ANN001, ANN202
            seen[_part].add(this_thread_cores())
            return _real(self, *args)
        monkeypatch.setattr(RunnerSegmenter, part, spy)
    before = this_thread_cores()
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["live", "--model", str(tiny_model), "--backend", "onnxruntime", "--source",
                                       str(clip), "--out", str(out), "--threads", "1", "--pin-cores", "--no-status"])
    assert result.exit_code == 0, result.output
    model, video = frozenset(CORES[-1:]), frozenset(CORES[:-1])
    assert f"pinned: model on cores {CORES[-1]}, video on cores" in result.output
    # a file is read in every-frame mode: capture prepares, the model's thread infers, Finish finishes
    assert seen == {"prepare": {video}, "infer": {model}, "finish": {video}}
    summary, records = read_run(out)
    assert summary["cores"] == {"model": sorted(model), "video": sorted(video)}
    assert summary["frames_inferred"] == summary["frames_in"] == len(records) == 60
    assert this_thread_cores() == before  # the caller's thread is given back as it was


@two_cores
def test_the_runtimes_workers_follow_the_thread_that_opened_the_session(tiny_model: Path) -> None:
    """What pinning relies on for --threads N > 1: ONNX Runtime's intra-op workers start with the
    cores of the thread that creates the session (Linux threads inherit the mask; ONNX Runtime
    sets none of its own when the thread count is given)."""
    from convseg_deploy.ort_session import cpu_session

    def tasks() -> set[str]:
        return set(os.listdir("/proc/self/task"))

    found: dict[str, object] = {}

    def open_pinned() -> None:
        pin_this_thread(frozenset(CORES[-1:]))
        known = tasks()
        session = cpu_session(tiny_model, threads=2)
        workers = tasks() - known
        found["workers"] = {tid: _allowed(tid) for tid in workers}
        session.run(None, {session.get_inputs()[0].name: np.zeros((1, 3, 64, 64), np.float32)})
        found["session"] = session

    thread = threading.Thread(target=open_pinned)
    thread.start()
    thread.join(60)
    assert found["workers"], "ONNX Runtime started no worker thread for 2 intra-op threads"
    assert set(found["workers"].values()) == {frozenset(CORES[-1:])}, found["workers"]


def _allowed(tid: str) -> frozenset[int]:
    return frozenset(os.sched_getaffinity(int(tid)))


def test_pin_cores_without_threads_is_one_line_and_a_summary(tiny_model: Path, clip: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["live", "--model", str(tiny_model), "--backend", "onnxruntime", "--source",
                                       str(clip), "--out", str(tmp_path / "out"), "--pin-cores", "--no-status"])
    assert result.exit_code == 1, result.output
    line = error_line(result.output)
    assert line.startswith("Error: --pin-cores needs --threads N")
    assert only_summary(tmp_path / "out")["error"] == line.removeprefix("Error: ")
    many = len(CORES) or 1
    result = CliRunner().invoke(main, ["live", "--model", str(tiny_model), "--backend", "onnxruntime", "--source",
                                       str(clip), "--out", str(tmp_path / "out2"), "--pin-cores", "--threads",
                                       str(many), "--no-status"])
    assert result.exit_code == 1, result.output
    assert f"--threads {many}" in error_line(result.output) and "drop --pin-cores" in error_line(result.output)
    only_summary(tmp_path / "out2")
