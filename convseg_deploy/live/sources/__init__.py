"""Where live frames come from: one class per kind of source, chosen from the ``--source`` text.

=================================  ==========  ===================================================
``--source``                       kind        read with
=================================  ==========  ===================================================
``0``, ``/dev/video2``             camera      OpenCV's V4L2 backend (capture cards with V4L2
                                               drivers appear as these devices)
``rtsp://``, ``rtsps://``,         network     FFmpeg through PyAV: open/read timeouts, FFmpeg's
``udp://``, ``tcp://``,                        options, clean interruption of a blocking read
``srt://``, ``rtmp://``,
``http(s)://``
``gst:PIPELINE ! appsink``         gstreamer   Debian's ``gst-launch-1.0`` in a child process
                                               (the appsink becomes a YUV4MPEG2 pipe to us)
a file path                        file        FFmpeg through PyAV (``--realtime``: paced at
                                               its own frame rate, as a camera would be)
=================================  ==========  ===================================================

Every source hands out RGB uint8 frames with their arrival time. A live source (camera,
network, GStreamer, a paced file) produces frames whether or not they are read, so the capture
stage reads it continuously; a file without ``--realtime`` waits for its reader. A drop of a
source that can come back (camera, network, GStreamer) raises ``SourceDropped`` and the capture
stage reopens it with backoff. Opening fails with a one-line ConvSegError naming the source.
"""

from __future__ import annotations

import re
from pathlib import Path

from convseg_deploy.errors import ConvSegError
from convseg_deploy.live.sources.base import (  # noqa: F401 - the package's public names
    GST_PREFIX, OPEN_TIMEOUT_S, STALL_TIMEOUT_S, Captured, Source, SourceDropped, captured_now)

NETWORK_SCHEMES = ("rtsp", "rtsps", "udp", "tcp", "srt", "rtmp", "http", "https")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_CAMERA = re.compile(r"^(\d+|/dev/video\d+)$")


def open_source(spec: str, *, realtime: bool = False, options: dict[str, str] | None = None,
                stall_timeout: float = STALL_TIMEOUT_S) -> Source:
    """The Source for ``spec`` (see the module docstring), checked but not opened yet."""
    text = spec.strip()
    options = dict(options or {})
    scheme = _SCHEME.match(text)
    if realtime and (text.startswith(GST_PREFIX) or scheme or _CAMERA.match(text)):
        raise ConvSegError(f"--realtime paces a video file; {spec} is live already: drop --realtime")
    if options and (text.startswith(GST_PREFIX) or _CAMERA.match(text)):
        raise ConvSegError(f"--ffmpeg-option applies to files and network URLs, not to {spec}")
    if text.startswith(GST_PREFIX):
        from convseg_deploy.live.sources.gstreamer import GStreamerSource

        source: Source = GStreamerSource(text, stall_timeout)
    elif _CAMERA.match(text):
        from convseg_deploy.live.sources.camera import CameraSource

        source = CameraSource(text)
    elif scheme:
        name = scheme.group(1).lower()
        if name not in NETWORK_SCHEMES:
            raise ConvSegError(f"--source {spec}: unknown scheme {name}:// (use one of "
                               f"{', '.join(s + '://' for s in NETWORK_SCHEMES)}, a camera, a file or gst:PIPELINE)")
        from convseg_deploy.live.sources.ffmpeg import FFmpegSource

        source = FFmpegSource(text, "network", options=options, stall_timeout=stall_timeout)
    else:
        from convseg_deploy.live.sources.ffmpeg import FFmpegSource

        path = Path(text)
        if not path.is_file():
            what = "is a folder, not a video file" if path.is_dir() else "not found"
            raise ConvSegError(f"--source {spec}: {what} (give a camera index or /dev/videoN, a video file, a URL or "
                               "gst:PIPELINE ! appsink)")
        source = FFmpegSource(text, "file", realtime=realtime, options=options, stall_timeout=stall_timeout)
    source.check()
    return source
