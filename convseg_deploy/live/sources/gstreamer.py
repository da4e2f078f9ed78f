"""GStreamer pipelines (``gst:... ! appsink``) run by ``gst-launch-1.0`` in a child process.

OpenCV's pip wheels are built without GStreamer and PyGObject does not pip-install without
system headers, so the pipeline runs in GStreamer's own launcher: the user's closing ``appsink``
becomes ``videoconvert ! video/x-raw,format=I420 ! y4menc ! fdsink fd=1``, and frames come over a
pipe as YUV4MPEG2 (a text header with the size and rate, then one ``FRAME`` line and an I420
picture per frame). GStreamer's own parser checks the pipeline: a bad one fails at open with
its message. The child runs in its own session, so a Ctrl-C meant for us does not end it
before we have stopped; it ends when the source is closed. End of stream (exit code 0) ends the
run; an error exit or a silent pipe is a drop, answered by restarting the pipeline.
"""

from __future__ import annotations

import os
import re
import select
import shlex
import shutil
import subprocess
import tempfile
import time
from typing import IO

import numpy as np

from convseg_deploy.errors import ConvSegError, MissingDependencyError
from convseg_deploy.live.sources.base import GST_PREFIX, STALL_TIMEOUT_S, Captured, Source, SourceDropped, captured_now

LAUNCHER = "gst-launch-1.0"
INSTALL_HINT = "apt-get install gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good"
_APPSINK = re.compile(r"!\s*appsink\b(?P<props>[^!]*)$")
_SYNC_OFF = re.compile(r"\bsync\s*=\s*(false|0|no)\b", re.IGNORECASE)
CHUNK = 1 << 20


def to_launch_line(spec: str) -> str:
    """The pipeline gst-launch-1.0 runs: the user's, with its closing appsink writing YUV4MPEG2
    to our pipe (``sync`` as the appsink had it: on unless it said sync=false)."""
    pipeline = spec[len(GST_PREFIX):].strip()
    found = _APPSINK.search(pipeline)
    if not found:
        raise ConvSegError(f"--source {spec}: a gst: pipeline must end in '! appsink', e.g. "
                           "gst:videotestsrc is-live=true ! video/x-raw,width=640,height=480 ! appsink")
    sync = "false" if _SYNC_OFF.search(found.group("props")) else "true"
    try:
        shlex.split(pipeline)
    except ValueError as exc:  # an unclosed quote
        raise ConvSegError(f"--source {spec}: {exc}") from None
    return (f"{pipeline[:found.start()].rstrip()} ! videoconvert ! video/x-raw,format=I420 ! y4menc ! "
            f"fdsink fd=1 sync={sync}")


class GStreamerSource(Source):
    kind = "gstreamer"

    def __init__(self, spec: str, stall_timeout: float = STALL_TIMEOUT_S) -> None:
        super().__init__(spec)
        self.line = to_launch_line(spec)
        self.stall_timeout = stall_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._buf = bytearray()
        self.size = (0, 0)  # (height, width)

    def check(self) -> None:
        if shutil.which(LAUNCHER) is None:
            raise MissingDependencyError(f"GStreamer's {LAUNCHER} is not installed (gst: sources need it): {INSTALL_HINT}")

    def open(self, timeout: float) -> None:
        self.close()
        self._log = tempfile.TemporaryFile()
        self._buf.clear()
        # Words as a shell would split them (quotes group), as gst-launch-1.0 expects its arguments.
        self._proc = subprocess.Popen([LAUNCHER, "-q", *shlex.split(self.line)], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                      stderr=self._log, start_new_session=True)
        try:
            header = self._read_line(time.monotonic() + timeout)
        except (SourceDropped, EOFError) as exc:
            message = self._gst_message() or str(exc) or "it exited before the first frame"
            self.close()
            raise ConvSegError(f"GStreamer cannot run {self.spec}: {message}") from None
        self._parse_header(header)

    def _parse_header(self, header: bytes) -> None:
        fields = header.decode("ascii", "replace").split()
        if not fields or fields[0] != "YUV4MPEG2":
            self.close()
            raise ConvSegError(f"GStreamer pipeline {self.spec} did not give YUV4MPEG2 video (header {header[:40]!r})")
        tags = {f[0]: f[1:] for f in fields[1:] if f}
        width, height = int(tags.get("W", 0)), int(tags.get("H", 0))
        if not tags.get("C", "420").startswith("420") or width % 2 or height % 2 or not width or not height:
            self.close()
            raise ConvSegError(f"GStreamer pipeline {self.spec} gives {width}x{height} {tags.get('C', '420')} frames; "
                               "live needs an even width and height (add videoscale ! video/x-raw,width=W,height=H)")
        num, _, den = tags.get("F", "0:1").partition(":")
        self.fps = float(num) / float(den) if den and float(den) else 0.0
        self.size = (height, width)

    def read(self) -> Captured | None:
        import cv2

        height, width = self.size
        try:
            line = self._read_line(time.monotonic() + self.stall_timeout)
        except EOFError:
            return self._ended()
        if not line.startswith(b"FRAME"):
            raise SourceDropped(f"GStreamer pipeline {self.spec} sent {line[:20]!r} where a frame should start")
        try:
            data = self._read_exact(width * height * 3 // 2, time.monotonic() + self.stall_timeout)
        except EOFError:
            raise SourceDropped(f"GStreamer pipeline {self.spec} stopped in the middle of a frame: "
                                f"{self._gst_message() or 'no message'}") from None
        yuv = np.frombuffer(data, np.uint8).reshape(height * 3 // 2, width)
        return captured_now(cv2.cvtColor(yuv, cv2.COLOR_YUV2RGB_I420))

    def _ended(self) -> None:
        """End of the pipe: the pipeline's end of stream (exit 0) or its failure."""
        assert self._proc is not None
        try:
            code = self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            code = None
        if code == 0:
            return None
        raise SourceDropped(f"GStreamer pipeline {self.spec} stopped (exit code {code}): {self._gst_message() or 'no message'}")

    def _fill(self, deadline: float) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        fd = self._proc.stdout.fileno()
        wait = deadline - time.monotonic()
        if wait <= 0 or not select.select([fd], [], [], wait)[0]:
            raise SourceDropped(f"no frame from GStreamer pipeline {self.spec} for {self.stall_timeout:g} s")
        chunk = os.read(fd, CHUNK)
        if not chunk:
            raise EOFError
        self._buf += chunk

    def _read_line(self, deadline: float) -> bytes:
        while (end := self._buf.find(b"\n")) < 0:
            if len(self._buf) > 4096:
                raise SourceDropped(f"GStreamer pipeline {self.spec} sent no line break in 4 KB")
            self._fill(deadline)
        line = bytes(self._buf[:end])
        del self._buf[:end + 1]
        return line

    def _read_exact(self, count: int, deadline: float) -> bytes:
        while len(self._buf) < count:
            self._fill(deadline)
        data = bytes(self._buf[:count])
        del self._buf[:count]
        return data

    def _gst_message(self) -> str:
        """GStreamer's last words on stderr, on one line ("erroneous pipeline: no element ...")."""
        if self._log is None:
            return ""
        self._log.seek(0)
        lines = [line.strip() for line in self._log.read().decode("utf-8", "replace").splitlines() if line.strip()]
        useful = [line for line in lines if line.startswith(("ERROR", "WARNING"))] or lines
        return " ".join(useful[-2:])[:600]

    def close(self) -> None:
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.terminate()
                try:
                    self._proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    self._proc.wait()
            if self._proc.stdout is not None:
                self._proc.stdout.close()
            self._proc = None
        if self._log is not None:
            self._log.close()
            self._log = None
