"""What ``predict`` reads: images, folders of images, globs and videos, one frame at a time.

Inputs are resolved (and videos probed) before anything is written, so a missing file or an
empty folder fails the run before it starts. Frames are then produced lazily: a video is never
held in memory, only the frames of the batch being processed. An unreadable image or video, and
a video that ends before the frame count its header declares, become a ``Frame`` with an
``error`` instead of stopping the run (predict then ends with an error naming the count).
"""

from __future__ import annotations

import glob
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import cv2
import numpy as np

from convseg_deploy.errors import ConvSegError
from convseg_deploy.imaging import IMAGE_EXTENSIONS, MAX_PIXELS, read_image, to_rgb

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".m4v")
_GLOB_CHARS = set("*?[")


@dataclass(frozen=True)
class Source:
    """One input file: an image, or a video with its (container-reported) frame count and rate;
    ``error`` says why a video cannot be decoded at all."""

    path: Path
    kind: str  # "image" | "video"
    frames: int = 1
    fps: float = 0.0
    error: str | None = None


@dataclass
class Frame:
    """One decoded frame (RGB uint8), or the reason it could not be decoded."""

    name: str  # output file stem, unique within a run
    source: Source
    index: int | None  # frame number within a video; None for an image
    image: np.ndarray | None
    error: str | None = None


def probe_video(path: Path) -> tuple[int, float]:
    """Frame count and rate of a video that decodes at least one frame, else a ConvSegError."""
    cap = cv2.VideoCapture(str(path))
    try:
        ok = cap.isOpened() and cap.read()[0]
        if not ok:
            raise ConvSegError(f"video {path} cannot be decoded (corrupt, empty or a codec OpenCV lacks)")
        return max(int(cap.get(cv2.CAP_PROP_FRAME_COUNT)), 1), float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
    finally:
        cap.release()


def _file_source(path: Path) -> Source:
    suffix = path.suffix.lower()
    if suffix in VIDEO_EXTENSIONS:
        try:
            frames, fps = probe_video(path)
        except ConvSegError as exc:  # skipped like an unreadable image, counted at the end
            return Source(path, "video", 1, 0.0, str(exc))
        return Source(path, "video", frames, fps)
    if suffix in IMAGE_EXTENSIONS:
        return Source(path, "image")
    raise ConvSegError(
        f"{path} is neither an image ({', '.join(IMAGE_EXTENSIONS)}) nor a video ({', '.join(VIDEO_EXTENSIONS)})"
    )


def resolve_inputs(inputs: Sequence[str | Path]) -> list[Source]:
    """Every input as sources, in the order given (folders and globs sorted by name)."""
    if not inputs:
        raise ConvSegError("no INPUT given: pass images, a folder of images, a glob or a video")
    sources: list[Source] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            media = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")
                           and p.suffix.lower() in IMAGE_EXTENSIONS + VIDEO_EXTENSIONS)
            if not media:
                raise ConvSegError(f"folder {path} has no images ({', '.join(IMAGE_EXTENSIONS)}) or videos "
                                   f"({', '.join(VIDEO_EXTENSIONS)})")
            sources.extend(_file_source(p) for p in media)
        elif path.is_file():
            sources.append(_file_source(path))
        elif _GLOB_CHARS & set(str(item)):
            matches = sorted(Path(p) for p in glob.glob(str(item)) if Path(p).is_file()
                             and Path(p).suffix.lower() in IMAGE_EXTENSIONS + VIDEO_EXTENSIONS)
            if not matches:
                raise ConvSegError(f"no image or video matches {item}")
            sources.extend(_file_source(p) for p in matches)
        else:
            raise ConvSegError(f"input {path} not found")
    return sources


def total_frames(sources: Iterable[Source]) -> int:
    return sum(s.frames for s in sources)


def unique_name(stem: str, used: set[str]) -> str:
    """``stem``, or ``stem__2``, ``stem__3``... when two inputs share a stem (a/x.png, b/x.jpg)."""
    name, n = stem, 1
    while name in used:
        n += 1
        name = f"{stem}__{n}"
    used.add(name)
    return name


def _video_frames(source: Source, used: set[str]) -> Iterator[Frame]:
    cap = cv2.VideoCapture(str(source.path))
    try:
        if not cap.isOpened():
            raise ConvSegError(f"video {source.path} cannot be opened any more (moved or deleted during the run?)")
        index = 0
        while True:
            ok, bgr = cap.read()
            if not ok:  # OpenCV cannot tell the end from a decode error; the probe proved frame 0 decodes
                break
            yield Frame(unique_name(f"{source.path.stem}_{index:06d}", used), source, index, to_rgb(bgr))
            index += 1
    finally:
        cap.release()
    if index < source.frames:  # cut short (a truncated file): the frames after the cut are missing
        yield Frame(f"{source.path.stem}_end", source, index, None,
                    f"video {source.path} ended after {index} of the {source.frames} frames its header declares "
                    "(truncated or damaged)")


def iter_frames(sources: Iterable[Source], max_pixels: int = MAX_PIXELS) -> Iterator[Frame]:
    """Frames of every source, decoded one at a time as they are consumed."""
    used: set[str] = set()
    for source in sources:
        if source.kind == "video":
            if source.error:
                yield Frame(unique_name(source.path.stem, used), source, None, None, source.error)
            else:
                yield from _video_frames(source, used)
            continue
        name = unique_name(source.path.stem, used)
        try:
            yield Frame(name, source, None, read_image(source.path, max_pixels))
        except ConvSegError as exc:
            yield Frame(name, source, None, None, str(exc))


def batched(frames: Iterable[Frame], size: int) -> Iterator[list[Frame]]:
    """Lists of up to ``size`` frames; the next batch is decoded only when it is asked for."""
    if size < 1:
        raise ConvSegError(f"batch size must be at least 1, got {size}")
    it = iter(frames)
    while batch := list(islice(it, size)):
        yield batch
