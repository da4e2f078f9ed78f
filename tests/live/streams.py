"""Real senders for the live tests: Debian's ``ffmpeg`` program streaming MPEG-TS on 127.0.0.1.

``make test`` installs ffmpeg and GStreamer's tools (``make system-deps``). Every sender is
bounded: ``-t`` seconds of video, and ``Sender`` stops the process when the test leaves it.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
from pathlib import Path

import pytest

FPS = 30


def need(tool: str) -> str:
    found = shutil.which(tool)
    if found is None:  # `make test` installs it; a bare pytest run on a machine without it says so
        pytest.fail(f"{tool} is not installed: run 'make system-deps' (Debian's ffmpeg and GStreamer tools)")
    return found


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_tcp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Sender:
    """``ffmpeg -re`` sending ``video`` (looped) as MPEG-2 in MPEG-TS over UDP at its own rate
    (30 fps) for ``seconds``: a key frame every 15 frames, no B-frames, as a camera encoder sends."""

    def __init__(self, video: Path, url: str, seconds: float) -> None:
        command = [need("ffmpeg"), "-hide_banner", "-loglevel", "error", "-nostdin", "-re", "-stream_loop", "-1",
                   "-i", str(video), "-t", f"{seconds:g}", "-c:v", "mpeg2video", "-q:v", "4", "-g", "15", "-bf", "0",
                   "-f", "mpegts", url]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def wait(self, timeout: float = 60.0) -> int:
        return self.process.wait(timeout)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stderr is not None:
            self.process.stderr.close()

    def __enter__(self) -> "Sender":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def udp_url(port: int) -> str:
    return f"udp://127.0.0.1:{port}?pkt_size=1316"


def count_frames(video: Path) -> int:
    """Frames of a video file, decoded to the end with PyAV."""
    import av

    with av.open(str(video)) as container:
        return sum(1 for _ in container.decode(container.streams.video[0]))
