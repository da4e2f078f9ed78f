"""Training augmentations of the reference recipe: rotate +-35 deg, flips, coarse dropout.

Plain numpy/OpenCV on uint8 frames at the model's size, driven by an explicit Generator so a
seed reproduces a run.
"""

from __future__ import annotations

import cv2
import numpy as np

MAX_ROTATION = 35.0
DROPOUT_HOLES = 8
DROPOUT_FRACTION = 0.1  # each hole's side as a fraction of the frame side


def random_crop(images: np.ndarray, masks: np.ndarray, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One random size x size crop per frame of a (N x H x W x 3, N x H x W) batch."""
    h, w = masks.shape[1:3]
    ys, xs = rng.integers(0, h - size + 1, len(images)), rng.integers(0, w - size + 1, len(images))
    return (np.stack([img[y:y + size, x:x + size] for img, y, x in zip(images, ys, xs)]),
            np.stack([m[y:y + size, x:x + size] for m, y, x in zip(masks, ys, xs)]))


def augment_pair(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One randomly augmented copy of (RGB uint8 H x W x 3, bool H x W)."""
    h, w = mask.shape
    if rng.random() < 0.5:
        image, mask = image[:, ::-1], mask[:, ::-1]
    if rng.random() < 0.5:
        image, mask = image[::-1], mask[::-1]
    if rng.random() < 0.5:
        angle = rng.uniform(-MAX_ROTATION, MAX_ROTATION)
        matrix = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
        image = cv2.warpAffine(np.ascontiguousarray(image), matrix, (w, h), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_REFLECT_101)
        mask = cv2.warpAffine(np.ascontiguousarray(mask, dtype=np.uint8), matrix, (w, h), flags=cv2.INTER_NEAREST,
                              borderMode=cv2.BORDER_REFLECT_101).astype(bool)
    if rng.random() < 0.5:  # coarse dropout hides image patches only; the mask still says polyp
        image = np.array(image)
        side_h, side_w = max(1, int(h * DROPOUT_FRACTION)), max(1, int(w * DROPOUT_FRACTION))
        for _ in range(rng.integers(1, DROPOUT_HOLES + 1)):
            y, x = rng.integers(0, h - side_h + 1), rng.integers(0, w - side_w + 1)
            image[y:y + side_h, x:x + side_w] = 0
    return np.ascontiguousarray(image), np.ascontiguousarray(mask)
