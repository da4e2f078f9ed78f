"""Calibration and verification frames for export: real images, or synthetic on request."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from convseg_deploy.config import PreprocessSpec
from convseg_deploy.data import find_samples
from convseg_deploy.errors import ConvSegError
from convseg_deploy.batching import iter_batches
from convseg_deploy.imaging import preprocess, read_image, read_mask, resize_image, resize_mask

SYNTHETIC = "synth"  # --calib-data synth: calibrate on generated frames, only when asked
SYNTH_SEED = 12345
CALIB_DATA_NEEDED = ("int8 and int8-cpu (in the default --precision) need calibration frames: pass --calib-data DIR "
                     f"with real frames (or --calib-data {SYNTHETIC} for synthetic ones, for trials only), or drop them "
                     "from --precision")


@dataclass
class ExportFrames:
    """RGB uint8 frames at the model's size: ``calib`` for INT8 ranges, ``verify`` for the checks."""

    calib: np.ndarray
    verify: np.ndarray
    source: str  # where they came from, for the manifest
    fingerprint: str  # identifies the calibration set for the range cache
    verify_masks: np.ndarray | None = None  # ground truth of ``verify`` (bool), for the Dice drop


def _synthetic(count: int, size: tuple[int, int], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``count`` generated frames and their masks at ``size``."""
    from convseg_deploy.synth import render_frame

    side = max(size)
    rendered = [render_frame(np.random.default_rng([seed, i]), side) for i in range(count)]
    return (np.stack([resize_image(f, size) for f, _ in rendered]).reshape(count, *size, 3),
            np.stack([resize_mask(m > 127, size) for _, m in rendered]).reshape(count, *size))


def verification_indices(count: int, calibrated: set[int], verify_count: int) -> tuple[list[int], int]:
    """Which of ``count`` frames the checks run on, and how many of them calibration did not see.

    Frames calibration did not use come first (evenly spread); when they are fewer than
    ``verify_count``, calibration frames (evenly spread) fill the set up to it: a small held-out
    folder, calibrated on in part, is then checked on all its frames, the same frames ``bench``
    measures on, instead of on the few it has left."""
    def spread(indices: list[int], n: int) -> list[int]:
        if n >= len(indices):
            return indices
        return [indices[i] for i in np.linspace(0, len(indices) - 1, num=n).round().astype(int)]

    unseen = spread([i for i in range(count) if i not in calibrated], verify_count)
    seen = spread(sorted(calibrated), verify_count - len(unseen)) if len(unseen) < verify_count else []
    return sorted(unseen + seen), len(unseen)


def load_frames(calib_data: str | Path | None, size: tuple[int, int], *, calib_count: int, calib_batch: int,
                verify_count: int, need_calibration: bool) -> ExportFrames:
    """Frames for calibration (``calib_count`` evenly spread over the folder) and verification
    (``verification_indices``; synthetic frames: ``verify_count`` others)."""
    if calib_count < 1 or calib_batch < 1:
        raise ConvSegError(f"--calib-count and --calib-batch must be >= 1 (got {calib_count}, {calib_batch})")
    if calib_data is None or str(calib_data) == SYNTHETIC:
        if need_calibration and calib_data is None:
            raise ConvSegError(CALIB_DATA_NEEDED)
        count = calib_count if need_calibration else 0
        frames, masks = _synthetic(count + verify_count, size, SYNTH_SEED)
        fp = hashlib.sha256(f"synth:{SYNTH_SEED}:{count}:{size}".encode()).hexdigest()
        return ExportFrames(frames[:count], frames[count:], f"synthetic frames ({count} calibration, {verify_count} "
                            "verification)", fp, masks[count:])
    root = Path(calib_data)
    samples = find_samples(root, require_masks=False)
    paths = [s.image for s in samples]
    if need_calibration and len(paths) < calib_batch:
        raise ConvSegError(f"calibration folder {root} has {len(paths)} images, fewer than the calibration batch "
                           f"({calib_batch}): add images or lower --calib-batch")
    pick = np.linspace(0, len(paths) - 1, num=min(calib_count, len(paths))).round().astype(int)
    chosen = set(pick.tolist()) if need_calibration else set()
    verify_idx, unseen = verification_indices(len(paths), chosen, verify_count)
    digest = hashlib.sha256()
    for i in sorted(chosen):
        stat = paths[i].stat()
        digest.update(f"{paths[i].resolve()}:{stat.st_size}:{stat.st_mtime_ns};".encode())
    digest.update(f"{size}".encode())

    def read(indices: list[int]) -> np.ndarray:
        if not indices:
            return np.empty((0, *size, 3), dtype=np.uint8)
        return np.stack([resize_image(read_image(paths[i]), size) for i in indices])

    verify_samples = [samples[i] for i in verify_idx]
    masks = (np.stack([resize_mask(read_mask(s.mask), size) for s in verify_samples]).reshape(len(verify_idx), *size)
             if verify_samples and all(s.mask is not None for s in verify_samples) else None)
    seen = len(verify_idx) - unseen
    return ExportFrames(read(sorted(chosen)), read(verify_idx), f"{root} ({len(chosen)} calibration, "
                        f"{len(verify_idx)} verification images: {unseen} unseen by calibration, {seen} calibrated on)",
                        digest.hexdigest(), masks)


def calibration_batches(frames: np.ndarray, spec: PreprocessSpec, batch: int) -> list[np.ndarray]:
    """Preprocessed float32 batches, all of size ``batch`` (a short last batch is dropped when
    there are full ones, so a static-batch model accepts them all)."""
    batches = [preprocess(frames[sl], spec) for sl in iter_batches(len(frames), batch)]
    if len(batches) > 1 and len(batches[-1]) < batch:
        batches.pop()
    return batches
