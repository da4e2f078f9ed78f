"""The hand-overs between the live stages: the newest frame for inference, masks for the output.

``Mailbox`` holds one frame. For a live source a new frame replaces one that inference has not
taken yet (that frame is skipped), so inference always works on the newest frame and no frame
ever queues for the model: latency cannot grow. For a file read as fast as possible
(``every_frame``) a put waits until the previous frame was taken instead, and nothing is skipped.

``Job`` is what the mailbox holds: the frame, and the model's input where capture prepared it.

``MaskBoard`` keeps the last masks inference finished and which frames it settled. The output
stage asks it for the newest mask of a frame at or before the one it shows (never a later one:
that would be drawn on a picture older than itself), waiting for the frame's own mask only in
``every_frame`` mode.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from convseg_deploy.live.sources import Captured


@dataclass(frozen=True)
class Job:
    """A frame for inference; ``model_input`` is ``Segmenter.prepare``'s result where capture
    prepared it (every-frame mode), else None (inference prepares the frame it takes)."""

    frame: Captured
    model_input: Any = None


class Mailbox:
    """One frame between capture and inference."""

    def __init__(self, every_frame: bool, on_skip: Callable[[int], None]) -> None:
        self.every_frame, self.on_skip = every_frame, on_skip
        self._item: Job | None = None
        self._closed = False
        self._cond = threading.Condition()

    def put(self, item: Job, stop: threading.Event) -> bool:
        """Hand ``item`` over; False if the mailbox was closed (or ``stop`` set) first."""
        with self._cond:
            while self.every_frame and self._item is not None and not self._closed and not stop.is_set():
                self._cond.wait(0.1)
            if self._closed or (self.every_frame and stop.is_set()):
                return False
            if self._item is not None:
                self.on_skip(1)  # inference never took it: a newer frame replaces it
            self._item = item
            self._cond.notify_all()
            return True

    def take(self) -> Job | None:
        """The newest frame, waiting for one; None once closed and empty."""
        with self._cond:
            while self._item is None and not self._closed:
                self._cond.wait(0.1)
            item, self._item = self._item, None
            self._cond.notify_all()
            return item

    def close(self, discard: bool) -> None:
        """No more frames; ``discard`` drops one not taken yet (counted as skipped)."""
        with self._cond:
            self._closed = True
            if discard and self._item is not None:
                self.on_skip(1)
                self._item = None
            self._cond.notify_all()


@dataclass(frozen=True)
class MaskResult:
    """The mask of frame ``index``, at that frame's size, with its region statistics."""

    index: int
    arrival: float  # of the frame it was computed from
    ready: float
    mask: np.ndarray
    polyp_area: float
    bbox: list[int] | None

    @property
    def latency_ms(self) -> float:
        return (self.ready - self.arrival) * 1000.0


class MaskBoard:
    """The last ``keep`` masks, and which frames inference has settled (inferred or passed over)."""

    def __init__(self, keep: int) -> None:
        self._recent: deque[MaskResult] = deque(maxlen=keep)
        self._latency: dict[int, float] = {}  # inferred frames whose record is not written yet
        self._taken = -1  # the last frame inference took
        self._in_flight: set[int] = set()  # taken, mask not published yet (the model, or the finishing thread)
        self._closed = False
        self._cond = threading.Condition()

    def taking(self, index: int) -> None:
        with self._cond:
            self._taken = index
            self._in_flight.add(index)

    def abandon(self, index: int) -> None:
        """Frame ``index`` was taken but will never have a mask (its inference failed)."""
        with self._cond:
            self._in_flight.discard(index)
            self._cond.notify_all()

    def publish(self, result: MaskResult) -> None:
        with self._cond:
            self._in_flight.discard(result.index)
            self._recent.append(result)
            self._latency[result.index] = result.latency_ms
            self._cond.notify_all()

    def close(self) -> None:
        """Inference has ended: every frame not inferred by now never will be."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed

    def newest_for(self, index: int, wait: bool, abort: threading.Event) -> MaskResult | None:
        """The newest mask of a frame at or before ``index``; with ``wait``, block until frame
        ``index``'s own mask is there (or inference ended, or ``abort``)."""
        with self._cond:
            while wait and not self._closed and not abort.is_set() and not any(r.index == index for r in self._recent):
                self._cond.wait(0.1)
            return next((r for r in reversed(self._recent) if r.index <= index), None)

    def settled(self, index: int) -> tuple[bool, float | None] | None:
        """(inferred, latency_ms) of frame ``index`` once known, else None; forgets it after."""
        with self._cond:
            if index in self._latency:
                return True, self._latency.pop(index)
            if index in self._in_flight and not self._closed:
                return None  # inferred or being inferred: its mask is on the way
            if self._closed or self._taken > index:
                return False, None
            return None

    def wait_closed(self, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self._closed, timeout)
