"""Latency statistics on known samples, and the timing loop's order of calls."""

from __future__ import annotations

import numpy as np
import pytest

from convseg_deploy.benchmarks.timing import (
    MIN_ITERS,
    MIN_P99_SAMPLES,
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
    assert stats["mean"] == pytest.approx(15.0)


def test_p99_needs_a_hundred_samples() -> None:
    assert latency_stats([0.010, 0.020])["p99"] is None  # with 2 samples it would be the max in disguise
    assert latency_stats(np.full(MIN_P99_SAMPLES - 1, 0.001))["p99"] is None
    assert latency_stats(np.full(MIN_P99_SAMPLES, 0.001))["p99"] == pytest.approx(1.0)
    assert MIN_P99_SAMPLES == 100


def test_single_sample_and_empty() -> None:
    stats = latency_stats([0.004])
    assert stats.pop("p99") is None and all(v == pytest.approx(4.0) for v in stats.values())
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


def test_warmup_by_time_runs_past_the_count_and_stays_untimed() -> None:
    log: list[str] = []
    clock = Clock(log, [1.0])  # every read one second later
    seconds = time_model(RecordingRunner(log), np.zeros((1, 3, 64, 64), np.float32), warmup=1, iters=2,
                         warmup_s=3.0, clock=clock)
    assert seconds.tolist() == [1.0, 1.0]
    # 1 counted warm-up, then timed warm-up until 3 s have passed (reads at 1, 2, 3, 4 s), then 2 timed iterations
    assert log.count("infer") == 1 + 3 + 2
    assert log[:3] == ["infer", "sync", "clock"]


class DeviceTimedRunner(RecordingRunner):
    """Reports a device time per call, as the GPU runners do from CUDA events."""

    def __init__(self, log: list[str]) -> None:
        super().__init__(log)
        self.calls = 0

    def infer(self, batch: np.ndarray) -> np.ndarray:
        self.calls += 1
        return super().infer(batch)

    def device_time_ms(self) -> float | None:
        return 0.5 * self.calls if self.calls else None


def test_device_time_is_collected_per_timed_iteration() -> None:
    log: list[str] = []
    device_ms: list[float] = []
    time_model(DeviceTimedRunner(log), np.zeros((1, 3, 64, 64), np.float32), warmup=2, iters=3, device_ms=device_ms,
               clock=Clock(log, [1.0]))
    assert device_ms == [1.5, 2.0, 2.5]  # the 3rd, 4th and 5th calls: warm-up excluded
    cpu_only: list[float] = []
    time_model(RecordingRunner([]), np.zeros((1, 3, 64, 64), np.float32), warmup=1, iters=3, device_ms=cpu_only)
    assert cpu_only == []
