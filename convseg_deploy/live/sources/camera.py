"""V4L2 cameras and capture cards (``0``, ``/dev/video2``) through OpenCV's V4L2 backend.

OpenCV, not PyAV, because its V4L2 backend negotiates the formats cameras and capture cards
offer (YUYV, MJPEG, NV12) and converts them to BGR in one call, and it honours
``CAP_PROP_BUFFERSIZE`` (its FFmpeg and GStreamer backends do not, opencv #23430): one driver
buffer, so a frame read is never an old one waiting in the driver's queue. ``cv2.VideoCapture``
has no timeout of its own; V4L2 returns a failed read within its select timeout, which capture
treats as a drop and answers by reopening the device.
"""

from __future__ import annotations

import os
from typing import Any

from convseg_deploy.errors import ConvSegError
from convseg_deploy.imaging import to_rgb
from convseg_deploy.live.sources.base import Captured, Source, SourceDropped, captured_now

DRIVER_BUFFERS = 1


class CameraSource(Source):
    kind = "camera"

    def __init__(self, spec: str) -> None:
        super().__init__(spec)
        self.device = f"/dev/video{spec}" if spec.isdigit() else spec
        self._cap: Any = None

    def check(self) -> None:
        if not os.path.exists(self.device):
            raise ConvSegError(f"camera {self.spec} not found: {self.device} does not exist (list the cameras with "
                               "'v4l2-ctl --list-devices'; a capture card needs its V4L2 driver loaded)")

    def open(self, timeout: float) -> None:
        import cv2

        self.close()
        cap = cv2.VideoCapture(self.device, cv2.CAP_V4L2)
        if not cap.isOpened():
            cap.release()
            raise ConvSegError(f"camera {self.spec} ({self.device}) cannot be opened: in use by another program, "
                               "no permission (add the user to the 'video' group) or not a video capture device")
        cap.set(cv2.CAP_PROP_BUFFERSIZE, DRIVER_BUFFERS)
        self.fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self._cap = cap

    def read(self) -> Captured | None:
        if self._cap is None:
            raise SourceDropped(f"camera {self.spec} is not open")
        ok, bgr = self._cap.read()
        if not ok or bgr is None:
            raise SourceDropped(f"camera {self.spec} delivered no frame (unplugged, or its driver stopped)")
        return captured_now(to_rgb(bgr))

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None
