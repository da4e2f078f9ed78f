"""The status line on stderr, once a second: input and inferred FPS over the last second, the
frames skipped so far and latency p50/p99 over the last ten seconds.

    live 12 s | in 30.0 fps | inferred 4.1 fps | skipped 301 | latency p50 241 ms p99 262 ms | out 360

On a terminal the line is rewritten in place; elsewhere (a log, a test) one line is printed per
second. A last line, with the whole run's rates and how it ended, closes it.
"""

from __future__ import annotations

import sys
import time
from collections import deque
from typing import TextIO

import numpy as np

from convseg_deploy.live.records import Tally

WINDOW_S = 10


class StatusLine:
    def __init__(self, tally: Tally, stream: TextIO | None = None) -> None:
        self.tally = tally
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.started = time.perf_counter()
        self._last = (self.started, 0, 0)
        self._inferred_at: deque[int] = deque([0], maxlen=WINDOW_S + 1)

    def line(self, state: str = "running") -> str:
        tally, now = self.tally, time.perf_counter()
        then, frames_in, inferred = self._last
        span = max(now - then, 1e-6)
        self._last = (now, tally.frames_in, tally.frames_inferred)
        self._inferred_at.append(tally.frames_inferred)
        recent = tally.latencies_ms[self._inferred_at[0]:]
        latency = "latency -" if not len(recent) else \
            "latency p50 {:.0f} ms p99 {:.0f} ms".format(*np.percentile(np.asarray(recent), [50, 99]))
        text = (f"live {now - self.started:.0f} s | in {(tally.frames_in - frames_in) / span:.1f} fps | inferred "
                f"{(tally.frames_inferred - inferred) / span:.1f} fps | skipped {tally.frames_skipped} | {latency} | "
                f"out {tally.frames_out}")
        return text if state == "running" else f"{text} | {state}"

    def tick(self, state: str = "running") -> None:
        text = self.line(state)
        if self.tty:
            self.stream.write("\r\033[K" + text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def done(self, state: str) -> None:
        """The last line, at the end of the run: rates and latency over the whole run."""
        figures, latency = self.tally.figures(), self.tally.figures()["latency_ms"]
        timing = "latency -" if latency["p50"] is None else f"latency p50 {latency['p50']:.0f} ms p99 {latency['p99']:.0f} ms"
        text = (f"live {time.perf_counter() - self.started:.0f} s | in {figures['fps_in'] or 0:.1f} fps | inferred "
                f"{figures['fps_inferred'] or 0:.1f} fps | skipped {figures['frames_skipped']} | {timing} | out "
                f"{figures['frames_out']} | {state}")
        self.stream.write(("\r\033[K" + text + "\n") if self.tty else text + "\n")
        self.stream.flush()
