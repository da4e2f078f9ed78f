"""``--pin-cores``: the model's threads on cores of their own, the video path on the others.

On a small CPU machine the model and the video path (decoding, drawing, encoding, the sender of a
recording, the status line) share the cores. Left to the scheduler, a video thread now and then
lands on a core a model thread is running on, and that inference takes a time slice longer: the
tail of ``latency_ms`` grows while its median stays the bench's (docs/live.md, the full model at one
thread on 2-core VMs). Pinning splits the cores the process may use: the model's ``--threads``
get the last ones, everything else the rest, as real-time video pipelines place their threads
(Holoscan's thread pools pin operators to cores).

Linux only (``sched_setaffinity`` per thread). Threads and processes inherit the mask of the
thread that creates them, which is how a runtime's worker threads follow the model (its session
is opened while the opening thread is on the model's cores) and FFmpeg's codec threads follow the
video (the source is opened after the opening thread moved to the video's cores).
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

from convseg_deploy.errors import ConvSegError


@dataclass(frozen=True)
class CorePlan:
    model: frozenset[int]
    video: frozenset[int]

    def as_dict(self) -> dict[str, list[int]]:
        return {"model": sorted(self.model), "video": sorted(self.video)}

    def describe(self) -> str:
        return f"model on cores {_listed(self.model)}, video on cores {_listed(self.video)}"


def plan_cores(threads: int | None, allowed: set[int] | None = None) -> CorePlan:
    """The split for ``--threads`` model threads among the cores this process may use (``allowed``:
    those cores, for tests; default ``os.sched_getaffinity``). The model takes the highest-numbered
    cores: the kernel does more of its own work (interrupts, the loopback's packets) on the first."""
    if not hasattr(os, "sched_setaffinity"):
        raise ConvSegError("--pin-cores needs Linux (per-thread CPU affinity); drop --pin-cores")
    if threads is None:
        raise ConvSegError("--pin-cores needs --threads N: the model's N threads get N cores, the video the rest")
    cores = sorted(allowed if allowed is not None else os.sched_getaffinity(0))
    if threads >= len(cores):
        raise ConvSegError(f"--pin-cores with --threads {threads}: this process may use {len(cores)} "
                           f"core(s) ({_listed(cores)}), which leaves none for the video; use --threads "
                           f"{len(cores) - 1} or fewer, or drop --pin-cores" if len(cores) > 1 else
                           f"--pin-cores: this process may use one core only ({_listed(cores)}); drop --pin-cores")
    return CorePlan(model=frozenset(cores[-threads:]), video=frozenset(cores[:-threads]))


def pin_this_thread(cores: frozenset[int]) -> None:
    """Move the calling thread (and what it starts from now on) to ``cores``."""
    os.sched_setaffinity(threading.get_native_id(), cores)


def this_thread_cores() -> frozenset[int]:
    return frozenset(os.sched_getaffinity(threading.get_native_id()))


def _listed(cores: object) -> str:
    return ",".join(str(c) for c in sorted(cores))  # type: ignore[call-overload]
