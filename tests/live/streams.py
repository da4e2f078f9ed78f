"""Helpers of the live tests around the real sender (benchmarks.senders: Debian's ffmpeg
streaming MPEG-TS over UDP on 127.0.0.1 at 30 fps; ``make test`` installs it with ``make
system-deps``, and a missing ffmpeg fails the test with that hint)."""

from __future__ import annotations

import socket
from pathlib import Path

from convseg_deploy.benchmarks.senders import Sender, free_udp_port, udp_url

__all__ = ["Sender", "count_frames", "free_tcp_port", "free_udp_port", "udp_url"]


def free_tcp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def count_frames(video: Path) -> int:
    """Frames of a video file, decoded to the end with PyAV."""
    import av

    with av.open(str(video)) as container:
        return sum(1 for _ in container.decode(container.streams.video[0]))
