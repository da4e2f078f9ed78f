"""Where the overlaid video goes: a recording, a network stream, a window.

Recording and streaming encode with FFmpeg through PyAV (H.264 with x264's ``ultrafast`` preset
and ``zerolatency`` tune where the build has x264: no look-ahead and no B-frames, so a frame
leaves the encoder as it enters, at a small CPU cost; MPEG-4 Part 2 otherwise), at the source's
frame rate: frame n has timestamp n / fps. OpenCV's writer cannot stream and ignores failed
writes; PyAV raises them (a full disk, a file size limit, a receiver that closed).

Each output fails alone: the output stage catches what ``open``, ``write`` or ``close`` raises,
calls ``abort`` and goes on with the others. A recording grows under a hidden temporary name
beside its final name and is renamed when it is closed (the end of the run, however it ended:
an interrupted recording is whole up to the interrupt); a recording that failed is removed, so
no truncated video is ever left under the final name (the summary says how many frames it had).
"""

from __future__ import annotations

import abc
import os
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from convseg_deploy.errors import ConvSegError
from convseg_deploy.fsutil import temp_beside

ENCODERS = ("libx264", "mpeg4")
FALLBACK_FPS = 30.0  # a source that does not say its rate is recorded at this one
STREAM_FORMATS = {"udp": "mpegts", "tcp": "mpegts", "srt": "mpegts", "rtmp": "flv", "rtsp": "rtsp"}
RECORD_SUFFIXES = (".mp4", ".mkv", ".mov", ".avi", ".ts")
WINDOW = "convseg-deploy live"


class Sink(abc.ABC):
    """One output; ``frames`` counts the frames it took, ``error`` says why it stopped."""

    name: str

    def __init__(self) -> None:
        self.frames = 0
        self.error: str | None = None

    @abc.abstractmethod
    def open(self, size: tuple[int, int], fps: float) -> None: ...

    @abc.abstractmethod
    def write(self, rgb: np.ndarray) -> None: ...

    def close(self) -> None:
        """Finish the output (flush, trailer, rename)."""

    def abort(self) -> None:
        """Drop the output after a failure; never raises."""

    def report(self) -> dict[str, Any]:
        return {"frames": self.frames, "error": self.error}


class _Encoded(Sink):
    """H.264 (or MPEG-4) video into a container that PyAV opens at ``target``."""

    def __init__(self, target: str, container_format: str | None) -> None:
        super().__init__()
        self.target, self.container_format = target, container_format
        self._container: Any = None
        self._stream: Any = None
        self.size = (0, 0)

    def open(self, size: tuple[int, int], fps: float) -> None:
        from convseg_deploy.live.sources.ffmpeg import import_av

        av = import_av()
        self.size = (size[0] - size[0] % 2, size[1] - size[1] % 2)  # 4:2:0 video needs even sides
        rate = Fraction(fps if fps > 0 else FALLBACK_FPS).limit_denominator(1001)
        codec = next((c for c in ENCODERS if c in av.codecs_available), None)
        if codec is None:
            raise ConvSegError("this PyAV build has neither an H.264 nor an MPEG-4 encoder")
        try:
            self._container = av.open(self._destination(), "w", format=self.container_format)
            stream = self._container.add_stream(codec, rate=rate)
        except (av.FFmpegError, OSError) as exc:
            self.abort()
            raise ConvSegError(f"cannot open {self.target}: {exc.strerror or exc}") from None
        stream.height, stream.width = self.size
        stream.pix_fmt = "yuv420p"
        stream.codec_context.gop_size = max(1, round(float(rate)))  # a key frame a second: receivers join fast
        if codec == "libx264":
            stream.options = {"preset": "ultrafast", "tune": "zerolatency"}
        self._stream = stream

    def write(self, rgb: np.ndarray) -> None:
        from convseg_deploy.live.sources.ffmpeg import import_av

        av = import_av()
        height, width = self.size
        if rgb.shape[:2] != self.size:
            import cv2

            rgb = rgb[:height, :width] if rgb.shape[0] - height in (0, 1) and rgb.shape[1] - width in (0, 1) else \
                cv2.resize(rgb, (width, height), interpolation=cv2.INTER_LINEAR)  # a stream that changed size
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        frame.pts = self.frames
        try:
            for packet in self._stream.encode(frame):
                self._container.mux(packet)
        except (av.FFmpegError, OSError) as exc:
            raise ConvSegError(f"{self.describe()} stopped after {self.frames} frames: {exc.strerror or exc}") from None
        self.frames += 1

    def close(self) -> None:
        from convseg_deploy.live.sources.ffmpeg import import_av

        av = import_av()
        try:
            for packet in self._stream.encode():  # what the encoder still holds
                self._container.mux(packet)
            self._container.close()  # the trailer (an mp4's index) is written here
        except (av.FFmpegError, OSError) as exc:
            raise ConvSegError(f"{self.describe()} could not be finished after {self.frames} frames: "
                               f"{exc.strerror or exc}") from None
        finally:
            self._container = None

    def abort(self) -> None:
        if self._container is not None:
            try:
                self._container.close()
            except Exception:  # noqa: BLE001 - it failed already; the failure that matters is reported
                pass
            self._container = None

    def describe(self) -> str:
        return self.target

    def _destination(self) -> Any:
        """What PyAV writes to: the URL (or path) itself."""
        return self.target


class Recording(_Encoded):
    """``--record FILE``: the container follows the suffix (mp4, mkv, mov, avi, ts).

    PyAV writes through a Python file object, not to the path: FFmpeg's own file writer notes a
    failed write (a full disk) and reports it only when the file is closed, whereas the file
    object raises at once, so the recording stops at the first lost write.
    """

    name = "record"

    def __init__(self, final: Path) -> None:
        self.final = Path(final)
        self.tmp = temp_beside(self.final, self.final.suffix)  # FFmpeg picks the container from the suffix
        self._file: Any = None
        super().__init__(str(self.tmp), None)

    def _destination(self) -> Any:
        self._file = open(self.tmp, "wb")
        return self._file

    def describe(self) -> str:
        return f"recording {self.final}"

    def close(self) -> None:
        super().close()
        try:
            self._file.close()
        except OSError as exc:
            raise ConvSegError(f"{self.describe()} could not be finished after {self.frames} frames: "
                               f"{exc.strerror or exc}") from None
        os.replace(self.tmp, self.final)

    def abort(self) -> None:
        super().abort()
        if self._file is not None:
            try:
                self._file.close()
            except OSError:
                pass
        self.tmp.unlink(missing_ok=True)

    def report(self) -> dict[str, Any]:
        kept = self.final.exists() and self.error is None
        return {"path": str(self.final), "frames": self.frames, "error": self.error, "kept": kept}


class StreamOut(_Encoded):
    """``--stream-out URL``: MPEG-TS over UDP, TCP or SRT, FLV over RTMP, or RTSP to a server."""

    name = "stream"

    def __init__(self, url: str) -> None:
        super().__init__(url, STREAM_FORMATS[url.split("://", 1)[0].lower()])

    def describe(self) -> str:
        return f"output stream {self.target}"

    def report(self) -> dict[str, Any]:
        return {"url": self.target, "frames": self.frames, "error": self.error}


class Display(Sink):
    """``--display``: an OpenCV window; q or Esc, or closing the window, ends the run."""

    name = "display"

    def __init__(self) -> None:
        super().__init__()
        self.closed_by_user = False

    @staticmethod
    def check() -> None:
        """A one-line error where no window can be shown."""
        import cv2

        if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
            raise ConvSegError("--display needs a screen, and neither DISPLAY nor WAYLAND_DISPLAY is set: run on the "
                               "device's desktop, or drop --display (--record or --stream-out instead)")
        gui = [line for line in cv2.getBuildInformation().splitlines() if line.strip().startswith("GUI:")]
        if gui and gui[0].split(":", 1)[1].strip().upper() == "NONE":
            raise ConvSegError("--display: this OpenCV (opencv-python-headless) has no windows: pip install "
                               "opencv-python in its place, or drop --display")

    def open(self, size: tuple[int, int], fps: float) -> None:
        import cv2

        cv2.namedWindow(WINDOW, cv2.WINDOW_NORMAL)

    def write(self, rgb: np.ndarray) -> None:
        import cv2

        cv2.imshow(WINDOW, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        key = cv2.waitKey(1) & 0xFF
        if key in (27, ord("q")) or cv2.getWindowProperty(WINDOW, cv2.WND_PROP_VISIBLE) < 1:
            self.closed_by_user = True
        self.frames += 1

    def close(self) -> None:
        import cv2

        cv2.destroyWindow(WINDOW)

    def abort(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - the window is gone either way
            pass


def check_record(path: Path, out: Path) -> None:
    """A recording goes into an existing writable folder, or straight into ``--out`` (made by the run)."""
    if path.suffix.lower() not in RECORD_SUFFIXES:
        raise ConvSegError(f"--record {path}: use one of {', '.join(RECORD_SUFFIXES)} (the suffix picks the container)")
    if path.parent.resolve() == out.resolve():
        return
    if not path.parent.is_dir():
        raise ConvSegError(f"--record {path}: folder {path.parent} does not exist")
    if not os.access(path.parent, os.W_OK):
        raise ConvSegError(f"--record {path}: folder {path.parent} is not writable")


def check_stream_url(url: str) -> None:
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme not in STREAM_FORMATS:
        raise ConvSegError(f"--stream-out {url}: use one of {', '.join(s + '://' for s in STREAM_FORMATS)} "
                           "(udp://HOST:PORT sends MPEG-TS)")
