"""A camera encoder on 127.0.0.1: Debian's ``ffmpeg`` sending a video as a live 30 fps stream.

The sender of the live tests, the live benchmark and ``make demo``: ``ffmpeg -re`` loops the
video at its own frame rate and sends MPEG-2 in MPEG-TS over UDP, with a key frame every half
second and no B-frames, as a hardware encoder on an endoscopy tower would. ``make system-deps``
installs ffmpeg.

    python -m benchmarks.senders VIDEO udp://127.0.0.1:5000 --seconds 12
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

from convseg_deploy.errors import MissingDependencyError

INSTALL_HINT = "make system-deps (Debian: apt-get install ffmpeg)"


def udp_url(port: int, host: str = "127.0.0.1") -> str:
    """An MPEG-TS-friendly UDP URL: datagrams of 7 transport packets (7 x 188 bytes)."""
    return f"udp://{host}:{port}?pkt_size=1316"


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def command(video: Path, url: str, seconds: float) -> list[str]:
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise MissingDependencyError(f"ffmpeg is not installed: {INSTALL_HINT}")
    return [ffmpeg, "-hide_banner", "-loglevel", "error", "-nostdin", "-re", "-stream_loop", "-1", "-i", str(video),
            "-t", f"{seconds:g}", "-c:v", "mpeg2video", "-q:v", "4", "-g", "15", "-bf", "0", "-f", "mpegts", url]


class Sender:
    """The sender as a child process for ``seconds``; ``stop`` (or leaving the block) ends it."""

    def __init__(self, video: Path, url: str, seconds: float) -> None:
        self.process = subprocess.Popen(command(video, url, seconds), stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)

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

    def __enter__(self) -> "Sender":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("video", type=Path)
    parser.add_argument("url")
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args(argv)
    try:
        line = command(args.video, args.url, args.seconds)
    except MissingDependencyError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    os.execv(line[0], line)  # becomes ffmpeg: a shell's `kill $!` stops the sender itself


if __name__ == "__main__":
    sys.exit(main())
