"""A camera encoder on 127.0.0.1: Debian's ``ffmpeg`` sending a video as a live 30 fps stream.

The sender of the live tests, the live benchmark and ``make demo``: the video is encoded once,
before sending, as MPEG-2 in MPEG-TS with a key frame every half second and no B-frames (what a
hardware encoder on an endoscopy tower sends), then ``ffmpeg -re -c copy`` loops that file at its
own frame rate over UDP. Encoding while sending would cost the machine under test a share of its
CPU that a camera's own encoder never takes from the host (measured: 0.25 s of CPU in 5 s of
30 fps 256x256 video on a 2-core Zen 4; copying costs a few ms). ``make system-deps`` installs ffmpeg.

    python -m benchmarks.senders VIDEO udp://127.0.0.1:5000 --seconds 12
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
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


def _ffmpeg() -> str:
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise MissingDependencyError(f"ffmpeg is not installed: {INSTALL_HINT}")
    return ffmpeg


def encode(video: Path, stream_file: Path) -> Path:
    """``video`` as the camera's encoder sends it (MPEG-2 in MPEG-TS), written to ``stream_file``."""
    proc = subprocess.run([_ffmpeg(), "-hide_banner", "-loglevel", "error", "-nostdin", "-y", "-i", str(video),
                           "-an", "-c:v", "mpeg2video", "-q:v", "4", "-g", "15", "-bf", "0", "-f", "mpegts",
                           str(stream_file)], capture_output=True, text=True)
    if proc.returncode != 0:
        stream_file.unlink(missing_ok=True)
        raise RuntimeError(f"ffmpeg could not encode {video} for sending: {proc.stderr.strip()[-300:]}")
    return stream_file


def command(stream_file: Path, url: str, seconds: float) -> list[str]:
    """Send an encoded stream file (``encode``) in a loop at its own rate, as it is (no re-encoding)."""
    return [_ffmpeg(), "-hide_banner", "-loglevel", "error", "-nostdin", "-re", "-stream_loop", "-1",
            "-i", str(stream_file), "-t", f"{seconds:g}", "-c", "copy", "-f", "mpegts", url]


def process_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of a running process (Linux /proc), None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime: fields 14 and 15


class Sender:
    """The sender as a child process for ``seconds``; ``stop`` (or leaving the block) ends it.
    ``cpu_s`` is the CPU the sending took (read when it is stopped; encoding beforehand not included)."""

    def __init__(self, video: Path, url: str, seconds: float) -> None:
        self._folder = tempfile.TemporaryDirectory(prefix="convseg-sender-")
        self.cpu_s: float | None = None
        try:
            stream_file = encode(Path(video), Path(self._folder.name) / "camera.ts")
            self.process = subprocess.Popen(command(stream_file, url, seconds), stdout=subprocess.DEVNULL,
                                            stderr=subprocess.DEVNULL)
        except BaseException:
            self._folder.cleanup()
            raise

    def wait(self, timeout: float = 60.0) -> int:
        return self.process.wait(timeout)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.cpu_s = process_cpu_s(self.process.pid)
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._folder.cleanup()

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
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # a shell's `kill $!` stops ffmpeg and removes the file
    try:
        with Sender(args.video, args.url, args.seconds) as sender:
            return sender.wait(args.seconds + 60)
    except (MissingDependencyError, RuntimeError) as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
