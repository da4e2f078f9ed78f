"""Decoding, preprocessing and postprocessing: the one place where pixels become tensors.

Every backend (PyTorch, ONNX Runtime, TensorRT) and every command (train, evaluate, export
verification, bench, predict) goes through these functions, driven by the PreprocessSpec that
travels with the artifact, so every backend sees identical input. Only numpy and OpenCV here:
edge installs use this module without torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from convseg_deploy.config import MAX_PIXELS, PreprocessSpec
from convseg_deploy.errors import ConvSegError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
MASK_LEVEL = 128  # masks are binarised at 128: JPEG masks carry compression artefacts




def _check_pixels(path: Path, max_pixels: int) -> None:
    """Refuse an image larger than ``max_pixels`` from its header, before decoding a byte of it."""
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = None  # our own limit below is the one that applies (and can be raised)
    try:
        with Image.open(path) as img:
            width, height = img.size
    except Exception:  # noqa: BLE001 - a format Pillow cannot identify: OpenCV decides below
        return
    if width * height > max_pixels:
        raise ConvSegError(f"{path} is {width}x{height} ({width * height / 1e6:.0f} MP), above the limit of "
                           f"{max_pixels / 1e6:g} MP: raise it with --max-pixels if the image is genuine")


def _to_uint8(img: np.ndarray) -> np.ndarray:
    """Any depth -> uint8 as a viewer shows it: 16-bit scaled down, float scaled from its range."""
    if img.dtype == np.uint8:
        return img
    if img.dtype == np.uint16:
        return (img / 257.0 + 0.5).astype(np.uint8)
    values = img.astype(np.float64)
    finite = values[np.isfinite(values)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    if img.dtype.kind == "f" and low >= 0.0 and high <= 1.0:
        values = values * 255.0  # float images are 0..1 by convention
    elif low < 0.0 or high > 255.0:
        values = (values - low) * (255.0 / max(high - low, 1e-12))  # another range: stretch it to 0..255
    return np.clip(np.nan_to_num(values) + 0.5, 0, 255).astype(np.uint8)


def _decode(path: Path, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode as a viewer would: EXIF orientation applied, palette/CMYK/alpha to BGR, any depth to uint8."""
    _check_pixels(path, max_pixels)
    try:
        buf = np.fromfile(str(path), dtype=np.uint8)  # fromfile + imdecode copes with any path
    except OSError as exc:
        raise ConvSegError(f"cannot read {path}: {exc.strerror or exc}") from None
    # Not IMREAD_UNCHANGED: that flag skips the EXIF orientation (a portrait frame would lie sideways).
    img = cv2.imdecode(buf, cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR) if buf.size else None
    if img is None:
        raise ConvSegError(f"{path} is not a readable image (empty, truncated or an unknown format)")
    return _to_uint8(img)


def to_rgb(img: np.ndarray) -> np.ndarray:
    """Grayscale, BGR or BGRA (OpenCV's order) -> RGB uint8."""
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    if img.shape[2] == 1:
        return cv2.cvtColor(img[:, :, 0], cv2.COLOR_GRAY2RGB)
    if img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def read_image(path: str | Path, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Any image file (gray, RGB, RGBA, palette, CMYK; 8 bit, 16 bit or float) as an RGB uint8
    H x W x 3 array, oriented as its EXIF tag says."""
    return to_rgb(_decode(Path(path), max_pixels))


def read_mask(path: str | Path) -> np.ndarray:
    """A mask file as a bool H x W array; any colour counts as polyp (BKAI's red and green)."""
    img = _decode(Path(path))
    if img.ndim == 3:
        img = img[:, :, :3].max(axis=2)
    return img >= MASK_LEVEL


def resize_image(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize to (height, width) with bilinear interpolation, as the reference code does."""
    h, w = size
    if rgb.shape[:2] == (h, w):
        return rgb
    return cv2.resize(rgb, (w, h), interpolation=cv2.INTER_LINEAR)


def resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a bool mask: bilinear on 0/255, then re-binarised, so thin parts survive."""
    h, w = size
    if mask.shape[:2] == (h, w):
        return mask
    small = cv2.resize(mask.astype(np.uint8) * 255, (w, h), interpolation=cv2.INTER_LINEAR)
    return small >= MASK_LEVEL


def preprocess(images: Sequence[np.ndarray] | np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """RGB uint8 frames (any sizes) -> float32 N x 3 x H x W input batch as ``spec`` says."""
    if isinstance(images, np.ndarray) and images.ndim == 3:
        images = [images]
    batch = np.stack([resize_image(img, spec.size) for img in images]).astype(np.float32)
    if spec.channel_order == "BGR":
        batch = batch[..., ::-1]
    batch *= np.float32(spec.scale)
    batch -= np.asarray(spec.mean, dtype=np.float32)
    batch /= np.asarray(spec.std, dtype=np.float32)
    return np.ascontiguousarray(batch.transpose(0, 3, 1, 2))


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """Numerically stable logistic function in float32."""
    logits = np.asarray(logits, dtype=np.float32)
    return (0.5 * (1.0 + np.tanh(0.5 * logits))).astype(np.float32)


def logits_to_masks(logits: np.ndarray, threshold: float) -> np.ndarray:
    """N x 1 x H x W logits -> N x H x W bool masks (probability strictly above ``threshold``)."""
    return sigmoid(logits)[:, 0] > threshold


def probability_at(logits_hw: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """One H x W logit map -> probability map resized to the source (height, width)."""
    prob = sigmoid(logits_hw)
    h, w = size
    if prob.shape != (h, w):
        prob = cv2.resize(prob, (w, h), interpolation=cv2.INTER_LINEAR)
    return prob


def list_images(folder: str | Path) -> list[Path]:
    """Image files directly inside ``folder``, sorted by name."""
    folder = Path(folder)
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith("."))
