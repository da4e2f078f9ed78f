"""Model-only timing: the timing loop and the latency statistics it feeds.

The loop is the one thing every speed number depends on, so it does nothing per iteration but
``runner.infer`` on the same prepared batch, ``runner.synchronize`` and one clock read: the
end of one iteration is the start of the next. Warm-up runs first, by count and by time (GPU
clocks and caches take a while to settle, CPUs do not), and is never recorded. GPU runners also
report each iteration's device time from CUDA events (as trtexec reports GPU compute next to host
latency). ``benchmarks.overhead`` checks that this loop is as fast as a bare ONNX Runtime loop.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np

from convseg_deploy.errors import ConvSegError
from convseg_deploy.runtime.base import Runner

MIN_ITERS = 3  # a --duration run still times at least this many iterations
MIN_P99_SAMPLES = 100  # below this, "p99" is the maximum in disguise: report the max instead
STAT_KEYS = ("mean", "p50", "p90", "p95", "p99", "min", "max")


def latency_stats(seconds: Sequence[float] | np.ndarray) -> dict[str, float | None]:
    """Mean, percentiles (linear interpolation between samples, numpy's default), min and max
    of per-iteration latencies given in seconds, in milliseconds. p99 is None with fewer than
    MIN_P99_SAMPLES samples."""
    ms = np.asarray(seconds, dtype=np.float64) * 1e3
    if ms.size == 0:
        raise ValueError("no latency samples to summarise")
    p50, p90, p95, p99 = np.percentile(ms, [50, 90, 95, 99])
    return {"mean": float(ms.mean()), "p50": float(p50), "p90": float(p90), "p95": float(p95),
            "p99": float(p99) if ms.size >= MIN_P99_SAMPLES else None, "min": float(ms.min()), "max": float(ms.max())}


def fps_from(stats: dict[str, float | None], batch_size: int) -> float:
    """Images per second: the batch size over the mean latency."""
    mean = stats["mean"] or 0.0
    return batch_size * 1e3 / mean if mean > 0 else float("inf")


def check_budget(iters: int | None, duration: float | None) -> None:
    """Exactly one of ``iters`` and ``duration``, each positive."""
    if (iters is None) == (duration is None):
        raise ConvSegError("give either --iters or --duration, not both (and not neither)")
    if iters is not None and iters < 1:
        raise ConvSegError(f"--iters must be at least 1, got {iters}")
    if duration is not None and duration <= 0:
        raise ConvSegError(f"--duration must be a positive number of seconds, got {duration}")


def time_model(
    runner: Runner,
    batch: np.ndarray,
    *,
    warmup: int = 3,
    iters: int | None = None,
    duration: float | None = None,
    warmup_s: float = 0.0,
    device_ms: list[float] | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> np.ndarray:
    """Per-iteration latencies in seconds of ``runner.infer(batch)`` on an active runner.

    ``iters`` times exactly that many iterations; ``duration`` runs until that many seconds
    have been timed, and at least MIN_ITERS iterations. Warm-up runs ``warmup`` iterations and
    then goes on until ``warmup_s`` seconds have passed. When ``device_ms`` is a list and the
    runner reports device time, each timed iteration's device time (ms) is appended to it.
    """
    check_budget(iters, duration)
    # Bound once: attribute lookups inside the loop would be the harness's own cost.
    infer, sync, device_time = runner.infer, runner.synchronize, runner.device_time_ms
    for _ in range(warmup):
        infer(batch)
    if warmup_s > 0:
        sync()
        until = clock() + warmup_s
        while True:
            infer(batch)
            sync()
            if clock() >= until:
                break
    sync()
    collect = device_ms is not None and device_time() is not None
    if iters is not None:
        stamps = [0.0] * (iters + 1)
        stamps[0] = clock()
        for i in range(1, iters + 1):
            infer(batch)
            sync()  # queued device work must finish before the clock is read
            stamps[i] = clock()
            if collect:
                device_ms.append(device_time())  # type: ignore[union-attr, arg-type]
    else:
        assert duration is not None
        stamps = [clock()]
        end = stamps[0] + duration
        while True:
            infer(batch)
            sync()
            now = clock()
            stamps.append(now)
            if collect:
                device_ms.append(device_time())  # type: ignore[union-attr, arg-type]
            if now >= end and len(stamps) > MIN_ITERS:
                break
    return np.diff(np.asarray(stamps, dtype=np.float64))
