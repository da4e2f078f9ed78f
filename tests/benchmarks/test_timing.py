"""Latency statistics on known samples, and the timing loop's order of calls."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.timing import (
    MIN_ITERS,
    check_budget,
    fps_from,
    latency_stats,
    time_model,
)
from convseg_deploy.errors import ConvSegError
from tests.benchmarks.conftest import RecordingRunner


def test_percentiles_exact_on_known_samples() -> None:
    stats = latency_stats(np.arange(1, 102) / 1e3)  # 1 ms .. 101 ms
    assert stats == pytest.approx({"mean": 51.0, "p50": 51.0, "p90": 91.0, "p95": 96.0, "p99": 100.0,
                                   "min": 1.0, "max": 101.0})


def test_percentiles_interpolate_between_samples() -> None:
    stats = latency_stats([0.010, 0.020])
    assert stats["p50"] == pytest.approx(15.0) and stats["p90"] == pytest.approx(19.0)
    assert stats["p99"] == pytest.approx(19.9) and stats["mean"] == pytest.approx(15.0)


def test_single_sample_and_empty() -> None:
    assert all(v == pytest.approx(4.0) for v in latency_stats([0.004]).values())
    with pytest.raises(ValueError):
        latency_stats([])


def test_fps_is_batch_over_mean_latency() -> None:
    assert fps_from({"mean": 50.0}, 8) == pytest.approx(160.0)


class Clock:
    """A clock that logs every read and advances by ``steps`` in turn."""

    def __init__(self, log: list[str], steps: list[float]) -> None:
        self.log, self.steps, self.now, self.reads = log, steps, 0.0, 0

    def __call__(self) -> float:
        self.log.append("clock")
        self.now += self.steps[self.reads % len(self.steps)]
        self.reads += 1
        return self.now


def test_synchronize_before_every_clock_read_and_warmup_untimed() -> None:
    log: list[str] = []
    runner = RecordingRunner(log)
    clock = Clock(log, [1.0, 2.0, 3.0])
    seconds = time_model(runner, np.zeros((2, 3, 64, 64), np.float32), warmup=2, iters=4, clock=clock)

    assert seconds.tolist() == [2.0, 3.0, 1.0, 2.0]  # differences of consecutive clock reads
    assert log.count("infer") == 6 and log.count("clock") == 5
    first_clock = log.index("clock")
    assert log[:first_clock] == ["infer", "infer", "sync"]  # warm-up, then wait, then start the clock
    for i, call in enumerate(log):
        if call == "clock":
            assert log[i - 1] == "sync", f"clock read at {i} not preceded by synchronize: {log}"
    assert log[first_clock + 1:] == ["infer", "sync", "clock"] * 4  # nothing else per iteration


def test_duration_runs_until_time_is_up() -> None:
    log: list[str] = []
    seconds = time_model(RecordingRunner(log), np.zeros((1, 3, 64, 64), np.float32), warmup=0, duration=2.0,
                         clock=Clock(log, [0.5]))
    assert seconds.sum() >= 2.0 and len(seconds) == 4


def test_duration_times_at_least_a_few_iterations() -> None:
    log: list[str] = []
    seconds = time_model(RecordingRunner(log), np.zeros((1, 3, 64, 64), np.float32), warmup=0, duration=0.001,
                         clock=Clock(log, [10.0]))
    assert len(seconds) == MIN_ITERS


@pytest.mark.parametrize("iters,duration", [(None, None), (5, 1.0), (0, None), (None, -1.0)])
def test_budget_needs_exactly_one_positive(iters: int | None, duration: float | None) -> None:
    with pytest.raises(ConvSegError):
        check_budget(iters, duration)
