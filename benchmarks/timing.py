"""Model-only timing: the timing loop and the latency statistics it feeds.

The loop is the one thing every speed number depends on, so it does nothing per iteration but
``runner.infer`` on the same prepared batch, ``runner.synchronize`` and one clock read: the
end of one iteration is the start of the next. Warm-up iterations run first and are never
recorded. ``benchmarks.overhead`` checks that this loop is as fast as a bare ONNX Runtime loop.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np

from convseg_deploy.errors import ConvSegError
from convseg_deploy.runtime.base import Runner

MIN_ITERS = 3  # a --duration run still times at least this many iterations
STAT_KEYS = ("mean", "p50", "p90", "p95", "p99", "min", "max")


def latency_stats(seconds: Sequence[float] | np.ndarray) -> dict[str, float]:
    """Mean, percentiles (linear interpolation between samples, numpy's default), min and max
    of per-iteration latencies given in seconds, in milliseconds."""
    ms = np.asarray(seconds, dtype=np.float64) * 1e3
    if ms.size == 0:
        raise ValueError("no latency samples to summarise")
    p50, p90, p95, p99 = np.percentile(ms, [50, 90, 95, 99])
    return {"mean": float(ms.mean()), "p50": float(p50), "p90": float(p90), "p95": float(p95),
            "p99": float(p99), "min": float(ms.min()), "max": float(ms.max())}


def fps_from(stats: dict[str, float], batch_size: int) -> float:
    """Images per second: the batch size over the mean latency."""
    return batch_size * 1e3 / stats["mean"] if stats["mean"] > 0 else float("inf")


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
    clock: Callable[[], float] = time.perf_counter,
) -> np.ndarray:
    """Per-iteration latencies in seconds of ``runner.infer(batch)`` on an active runner.

    ``iters`` times exactly that many iterations; ``duration`` runs until that many seconds
    have been timed, and at least MIN_ITERS iterations.
    """
    check_budget(iters, duration)
    # Bound once: attribute lookups inside the loop would be the harness's own cost.
    infer, sync = runner.infer, runner.synchronize
    for _ in range(warmup):
        infer(batch)
    sync()
    if iters is not None:
        stamps = [0.0] * (iters + 1)
        stamps[0] = clock()
        for i in range(1, iters + 1):
            infer(batch)
            sync()  # queued device work must finish before the clock is read
            stamps[i] = clock()
    else:
        assert duration is not None
        stamps = [clock()]
        end = stamps[0] + duration
        while True:
            infer(batch)
            sync()
            now = clock()
            stamps.append(now)
            if now >= end and len(stamps) > MIN_ITERS:
                break
    return np.diff(np.asarray(stamps, dtype=np.float64))
