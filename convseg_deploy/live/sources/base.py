"""What every live source is and hands out (the frame, the drop, the base class), in a module of
its own: the concrete sources import it, and the package's ``open_source`` imports them."""

from __future__ import annotations

import abc
import time
from dataclasses import dataclass, field

import numpy as np

GST_PREFIX = "gst:"
OPEN_TIMEOUT_S = 5.0  # how long opening a network or GStreamer source may take before it is an error
STALL_TIMEOUT_S = 2.0  # a live source silent this long has dropped (then it is reopened)


@dataclass
class Captured:
    """One frame as its source delivered it.

    arrival: time.perf_counter() when it was handed over; wall: time.time() at that instant.
    pts: the source's own timestamp in seconds, where it has one.
    index: set by the capture stage (0, 1, ... in arrival order).
    """

    image: np.ndarray  # RGB uint8 H x W x 3
    arrival: float
    wall: float
    pts: float | None = None
    index: int = field(default=-1)


def captured_now(image: np.ndarray, pts: float | None = None) -> Captured:
    return Captured(image, time.perf_counter(), time.time(), pts)


class SourceDropped(Exception):
    """A live source stopped delivering (silence, a read error, the end of a stream); the
    message says what happened. Capture reopens sources whose ``retry`` is True."""


class Source(abc.ABC):
    """Opened once per connection (``open`` again after a drop), read by one thread only."""

    kind: str  # camera | network | gstreamer | file
    live: bool = True  # frames arrive at the source's pace whether read or not
    retry: bool = True  # a drop is retried (reconnect) rather than ending the run

    def __init__(self, spec: str) -> None:
        self.spec = spec
        self.fps = 0.0  # nominal frame rate, 0 when the source does not say

    def check(self) -> None:
        """Cheap checks before anything is opened (a missing device or file); ConvSegError."""

    @abc.abstractmethod
    def open(self, timeout: float) -> None:
        """Connect and wait (at most ``timeout`` s) until frames can be read; ConvSegError if not."""

    @abc.abstractmethod
    def read(self) -> Captured | None:
        """The next frame, None at the end of a file (or a finite pipeline); SourceDropped when a
        live source stops delivering."""

    def close(self) -> None:
        """Release the connection; safe to call twice, and after a failed open."""

    def __str__(self) -> str:
        return self.spec
