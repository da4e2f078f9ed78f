"""Video files and network streams (RTSP, UDP, TCP, SRT, RTMP, HTTP) through FFmpeg, with PyAV.

PyAV rather than OpenCV's ``VideoCapture``: it bounds opening and every read with a timeout
(FFmpeg's interrupt callback), so a silent sender is noticed within ``stall_timeout`` instead of
blocking forever; it passes FFmpeg's own options (``--ffmpeg-option rtsp_transport=tcp``); it
gives each frame's timestamp, which paces a ``--realtime`` file; and its wheel bundles FFmpeg, so
a device needs nothing else. Packets that do not decode (a lost UDP datagram) are counted and
passed over; a stream that stops, ends or fails raises SourceDropped, a file that ends returns
None. Live streams decode with slice threads only: frame threads would hold frames back.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from convseg_deploy.errors import ConvSegError, MissingDependencyError, one_line
from convseg_deploy.live.sources.base import STALL_TIMEOUT_S, Captured, Source, SourceDropped, captured_now

# Start fast: a short probe (half a second of stream) and low-delay decoding. Not fflags=nobuffer:
# it drops the packets read while probing (the first half second of every connection); the
# capture stage drains what the probe kept within moments, so keeping them costs no latency.
LIVE_OPTIONS = {"flags": "low_delay", "probesize": "500000", "analyzeduration": "500000"}
UDP_OPTIONS = {"overrun_nonfatal": "1"}  # a burst that overflows FFmpeg's UDP buffer is lost data, not an error
FALLBACK_FPS = 30.0  # to pace a --realtime file whose frames carry no timestamps


def import_av() -> Any:
    try:
        import av
    except ImportError:
        raise MissingDependencyError('PyAV is not installed (files and network sources of live need it): '
                                     'pip install "convseg-deploy[live]"') from None
    return av


class FFmpegSource(Source):
    """``kind`` "file" (ends at its end, never reconnected) or "network"."""

    def __init__(self, spec: str, kind: str, *, realtime: bool = False, options: dict[str, str] | None = None,
                 stall_timeout: float = STALL_TIMEOUT_S) -> None:
        super().__init__(spec)
        self.kind = kind
        self.live = kind == "network" or realtime
        self.retry = kind == "network"
        self.realtime = realtime
        self.stall_timeout = stall_timeout
        defaults = dict(LIVE_OPTIONS) if kind == "network" else {}
        if spec.lower().startswith("udp://"):
            defaults.update(UDP_OPTIONS)
        self.options = {**defaults, **(options or {})}
        self.decode_errors = 0
        self._container: Any = None
        self._frames: Iterator[Any] | None = None
        self._count = 0
        self._pace: tuple[float, float] | None = None  # (perf_counter, pts) of the first paced frame

    def open(self, timeout: float) -> None:
        av = import_av()
        self.close()
        try:
            container = av.open(self.spec, timeout=(timeout, self.stall_timeout), options=self.options)
        except av.ExitError:
            raise ConvSegError(f"no video arrived from {self.spec} within {timeout:.1f} s: is the sender running, and "
                               "is the address right?") from None
        except ConnectionRefusedError:
            raise ConvSegError(f"{self.spec} refused the connection: nothing listens there (is the camera or server "
                               "running?)") from None
        except (av.FFmpegError, OSError) as exc:
            what = f"video {self.spec} cannot be decoded" if self.kind == "file" else f"cannot open {self.spec}"
            raise ConvSegError(f"{what}: {one_line(exc)}") from None
        if not container.streams.video:
            container.close()
            raise ConvSegError(f"{self.spec} has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "SLICE" if self.live else "AUTO"
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        self.fps = float(rate) if rate else 0.0
        self._container, self._frames = container, self._decode(container, stream)

    def _decode(self, container: Any, stream: Any) -> Iterator[Any]:
        av = import_av()
        for packet in container.demux(stream):  # ends with a flush packet that empties the decoder
            try:
                yield from packet.decode()
            except av.InvalidDataError:
                self.decode_errors += 1

    def read(self) -> Captured | None:
        av = import_av()
        if self._frames is None:
            raise SourceDropped(f"{self.spec} is not open")
        try:
            frame = next(self._frames)
        except StopIteration:
            if self.kind == "file":
                return None
            raise SourceDropped(f"{self.spec} ended (the sender stopped or closed the connection)") from None
        except av.ExitError:
            raise SourceDropped(f"no data from {self.spec} for {self.stall_timeout:g} s") from None
        except (av.FFmpegError, OSError) as exc:
            if self.kind == "file":
                raise ConvSegError(f"video {self.spec} cannot be read past frame {self._count}: {one_line(exc)}") from None
            raise SourceDropped(f"{self.spec} failed: {one_line(exc)}") from None
        self._count += 1
        pts = float(frame.time) if frame.time is not None else None
        if self.realtime:
            self._wait_for(pts if pts is not None else self._count / (self.fps or FALLBACK_FPS))
        # reformat, then to_ndarray: the same swscale conversion, several times faster than to_ndarray(format=)
        return captured_now(frame.reformat(format="rgb24").to_ndarray(), pts)

    def _wait_for(self, pts: float) -> None:
        """Hold the frame until its time comes, as ``ffmpeg -re`` does: frame n leaves n frame
        intervals after the first (no sleep when decoding is behind)."""
        if self._pace is None:
            self._pace = (time.perf_counter(), pts)
        delay = self._pace[0] + (pts - self._pace[1]) - time.perf_counter()
        if delay > 0:
            time.sleep(delay)

    def close(self) -> None:
        if self._container is not None:
            try:
                self._container.close()
            finally:
                self._container, self._frames = None, None
