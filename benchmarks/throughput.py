"""Throughput timing: several infer requests in flight at once (OpenVINO's AsyncInferQueue).

A latency row runs one request after another; a server or a multi-stream video box keeps
several in flight, and CPU plugins then split the cores into streams. This row reports images
per second over the wall time of the whole run, and each request's own latency (from its
submission, which waits for a free request, to its completion callback): throughput mode buys
images per second with a longer wait per image, and the report shows both.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from convseg_deploy.benchmarks.timing import MIN_ITERS, check_budget, latency_stats
from convseg_deploy.errors import ConvSegError
from convseg_deploy.runtime.base import Runner


def time_streams(runner: Runner, batch: np.ndarray, *, warmup: int = 3, iters: int | None = None,
                 duration: float | None = None) -> dict[str, Any]:
    """``latency_ms`` (per request), ``iters`` (requests timed), ``fps`` (images/s over the wall
    time) and ``requests_in_flight`` of a runner that has ``stream`` (see OpenVinoRunner.stream).
    At least twice as many requests as are in flight are timed, whatever ``iters`` says."""
    check_budget(iters, duration)
    stream = getattr(runner, "stream", None)
    if stream is None:
        raise ConvSegError(f"{type(runner).__name__} has no asynchronous queue: throughput rows need OpenVINO")
    # Warm-up fills every request once at least, so each has run before the clock starts.
    wall, _, jobs = stream(batch, max(warmup, 1))
    wall, _, jobs = stream(batch, max(warmup, jobs))
    if iters is None:
        assert duration is not None
        per_request = wall / max(warmup, jobs)
        iters = max(MIN_ITERS, math.ceil(duration / max(per_request, 1e-9)))
    count = max(iters, 2 * jobs)  # every request in flight runs at least twice in the timed part
    wall, latencies, jobs = stream(batch, count)
    return {"latency_ms": latency_stats(latencies), "iters": count, "fps": count * batch.shape[0] / wall,
            "requests_in_flight": jobs}
