"""Pictures of a prediction: outlined overlays, corner notes, probability heatmaps, 16-bit
probability maps, region statistics, PNG writing and the streamed overlay video. RGB in, files
out; OpenCV only.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from convseg_deploy.errors import ConvSegError
from convseg_deploy.fsutil import atomic_path, temp_beside

OUTLINE_RGB = (0, 255, 0)  # green: the complementary colour of mucosa, visible on any frame
TINT_RGB = np.array([0, 255, 0], np.float32)
TINT_ALPHA = 0.3
HEATMAP_ALPHA = 0.5


def overlay(rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The frame with the mask tinted and its outline drawn (RGB uint8)."""
    out = rgb.copy()
    if mask.any():
        region = out[mask].astype(np.float32)
        out[mask] = np.clip(region + TINT_ALPHA * (TINT_RGB - region), 0, 255).astype(np.uint8)
        contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        # Outline width grows with the frame, so it stays visible on large video frames.
        thickness = max(1, round(max(rgb.shape[:2]) / 300))
        cv2.drawContours(out, contours, -1, OUTLINE_RGB, thickness, cv2.LINE_AA)
    return out


def corner_note(rgb: np.ndarray, text: str) -> np.ndarray:
    """The frame with ``text`` in its top-left corner, white on a dark box (RGB uint8): how a live
    frame says that no mask is drawn on it. The text scales with the frame."""
    out = rgb.copy()
    scale = max(0.3, rgb.shape[0] / 720.0)
    thickness = max(1, round(scale * 2))
    (w, h), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    pad = max(2, round(4 * scale))
    cv2.rectangle(out, (0, 0), (w + 2 * pad, h + base + 2 * pad), (0, 0, 0), cv2.FILLED)
    cv2.putText(out, text, (pad, pad + h), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thickness, cv2.LINE_AA)
    return out


def heatmap(rgb: np.ndarray, prob: np.ndarray) -> np.ndarray:
    """The probability map in the JET colour map, blended over the frame (RGB uint8)."""
    levels = np.clip(prob * 255.0 + 0.5, 0, 255).astype(np.uint8)
    colours = cv2.cvtColor(cv2.applyColorMap(levels, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
    return cv2.addWeighted(rgb, 1.0 - HEATMAP_ALPHA, colours, HEATMAP_ALPHA, 0.0)


def prob16(prob: np.ndarray) -> np.ndarray:
    """Probabilities in [0, 1] as uint16 levels 0..65535 (divide by 65535 to read them back)."""
    return np.clip(prob * 65535.0 + 0.5, 0, 65535).astype(np.uint16)


def region_stats(mask: np.ndarray) -> dict[str, Any]:
    """Polyp area share, number of 8-connected regions and the largest region's box (x, y, w, h)."""
    count, _, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    regions = count - 1  # label 0 is the background
    box: list[int] | None = None
    if regions:
        largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
        x, y, w, h = (int(v) for v in stats[largest, :4])
        box = [x, y, w, h]
    return {"polyp_area": float(mask.mean()) if mask.size else 0.0, "regions": int(regions), "bbox": box}


def write_png(path: Path, image: np.ndarray) -> None:
    """Write a gray (uint8/uint16) or RGB image as PNG; raise a one-line error when it fails."""
    data = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image
    ok, buf = cv2.imencode(".png", data)
    if not ok:
        raise ConvSegError(f"OpenCV could not encode {path.name}")
    with atomic_path(path) as tmp:  # a full disk leaves no truncated PNG under the final name
        tmp.write_bytes(buf.tobytes())


class VideoSink:
    """An mp4v video written frame by frame to a hidden temp file, renamed into place by ``close``.

    A run that fails part way calls ``abort`` instead, so no truncated video is left under the
    final name. OpenCV's writer ignores failed writes (a full disk gives a file without its index
    and no error), so ``close`` reads the file back and counts its frames before the rename.
    """

    def __init__(self, final: Path, fps: float, size: tuple[int, int]) -> None:
        self.final = final
        # The writer picks the container from the suffix, so the temp name must end in .mp4.
        self.tmp = temp_beside(final, ".mp4")
        h, w = size
        self.writer = cv2.VideoWriter(str(self.tmp), cv2.VideoWriter_fourcc(*"mp4v"), fps if fps > 0 else 25.0, (w, h))
        if not self.writer.isOpened():
            self.abort()
            raise ConvSegError("OpenCV cannot write mp4v video on this machine (no video encoder): drop --overlay")
        self.size = size
        self.frames = 0

    def write(self, rgb: np.ndarray) -> None:
        if rgb.shape[:2] != self.size:  # a stream may change resolution; the container cannot
            rgb = cv2.resize(rgb, (self.size[1], self.size[0]), interpolation=cv2.INTER_LINEAR)
        self.writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        self.frames += 1

    def close(self) -> Path:
        self.writer.release()  # flushes the container before the rename
        readable = int(cv2.VideoCapture(str(self.tmp)).get(cv2.CAP_PROP_FRAME_COUNT))
        if readable != self.frames:
            self.tmp.unlink(missing_ok=True)
            raise ConvSegError(f"could not write {self.final}: {max(readable, 0)} of its {self.frames} frames are readable "
                               "(is the disk full?): free space and run again")
        os.replace(self.tmp, self.final)
        return self.final

    def abort(self) -> None:
        self.writer.release()
        self.tmp.unlink(missing_ok=True)
