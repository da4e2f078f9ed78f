"""Decoding and preprocessing: every backend's input comes from these functions."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from convseg_deploy.config import REFERENCE_PREPROCESS, PreprocessSpec
from convseg_deploy.errors import ConvSegError
from convseg_deploy.imaging import (
    list_images,
    logits_to_masks,
    preprocess,
    probability_at,
    read_image,
    read_mask,
    resize_mask,
    sigmoid,
)


def random_rgb(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def write(path: Path, array: np.ndarray) -> Path:
    assert cv2.imwrite(str(path), array)
    return path


# ---------------------------------------------------------------------------- preprocess


def test_preprocess_applies_scale_mean_std_in_rgb_order() -> None:
    spec = PreprocessSpec(size=(16, 32), channel_order="RGB", scale=1 / 255, mean=(0.1, 0.2, 0.3), std=(0.5, 0.25, 2.0))
    img = random_rgb(16, 32)
    out = preprocess([img], spec)
    assert out.dtype == np.float32 and out.shape == (1, 3, 16, 32)
    assert out.flags["C_CONTIGUOUS"]
    for c in range(3):
        expected = (img[:, :, c].astype(np.float64) / 255 - spec.mean[c]) / spec.std[c]
        np.testing.assert_allclose(out[0, c], expected, rtol=1e-5, atol=1e-5)


def test_bgr_order_reverses_the_channels() -> None:
    rgb = PreprocessSpec(size=(32, 32), channel_order="RGB", mean=(0, 0, 0), std=(1, 1, 1))
    bgr = PreprocessSpec(size=(32, 32), channel_order="BGR", mean=(0, 0, 0), std=(1, 1, 1))
    img = random_rgb(32, 32, seed=1)
    a, b = preprocess(img, rgb), preprocess(img, bgr)
    np.testing.assert_array_equal(b, a[:, ::-1])
    assert b.flags["C_CONTIGUOUS"] and b.dtype == np.float32
    np.testing.assert_allclose(b[0, 0], img[:, :, 2] / 255, rtol=1e-6)  # first input channel is blue


def test_bgr_mean_and_std_are_in_the_spec_channel_order() -> None:
    spec = PreprocessSpec(size=(16, 16), channel_order="BGR", scale=1.0, mean=(10, 20, 30), std=(1, 2, 4))
    img = np.zeros((16, 16, 3), np.uint8)
    img[..., 0], img[..., 1], img[..., 2] = 50, 60, 70  # R, G, B
    out = preprocess(img, spec)
    np.testing.assert_allclose(out[0, :, 0, 0], [(70 - 10) / 1, (60 - 20) / 2, (50 - 30) / 4])


def test_reference_preprocessing_is_bgr_over_255() -> None:
    img = random_rgb(256, 256, seed=2)
    out = preprocess(img, REFERENCE_PREPROCESS)
    np.testing.assert_allclose(out[0].transpose(1, 2, 0), img[:, :, ::-1] / 255, rtol=1e-6)


def test_preprocess_resizes_frames_of_any_size_into_one_batch() -> None:
    spec = PreprocessSpec(size=(32, 48))
    flat = np.full((40, 50, 3), 200, np.uint8)
    out = preprocess([flat, random_rgb(100, 70), random_rgb(32, 48)], spec)
    assert out.shape == (3, 3, 32, 48) and out.dtype == np.float32 and out.flags["C_CONTIGUOUS"]
    expected = (200 / 255 - np.array(spec.mean)) / np.array(spec.std)
    np.testing.assert_allclose(out[0, :, 5, 5], expected, rtol=1e-5)


# ---------------------------------------------------------------------------- decoding


def test_read_image_returns_rgb_from_bgr_files(tmp_path: Path) -> None:
    rgb = random_rgb(20, 30, seed=3)
    path = write(tmp_path / "frame.png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    out = read_image(path)
    assert out.dtype == np.uint8 and out.shape == (20, 30, 3)
    np.testing.assert_array_equal(out, rgb)


def test_read_image_grayscale_becomes_three_equal_channels(tmp_path: Path) -> None:
    gray = np.arange(40 * 50, dtype=np.uint32).reshape(40, 50) % 256
    path = write(tmp_path / "gray.png", gray.astype(np.uint8))
    out = read_image(path)
    assert out.shape == (40, 50, 3) and out.dtype == np.uint8
    for c in range(3):
        np.testing.assert_array_equal(out[:, :, c], gray)


def test_read_image_rgba_drops_alpha_and_keeps_colours(tmp_path: Path) -> None:
    bgra = np.zeros((10, 12, 4), np.uint8)
    bgra[..., 0] = 255  # blue
    bgra[:, :6, 2] = 128  # some red on the left
    bgra[..., 3] = 40  # mostly transparent: alpha is ignored, not blended
    out = read_image(write(tmp_path / "rgba.png", bgra))
    assert out.shape == (10, 12, 3)
    np.testing.assert_array_equal(out[0, 0], [128, 0, 255])
    np.testing.assert_array_equal(out[0, 11], [0, 0, 255])


def test_read_image_16_bit(tmp_path: Path) -> None:
    bgr16 = np.zeros((8, 8, 3), np.uint16)
    bgr16[..., 0] = 65535  # blue at full scale
    bgr16[..., 2] = 100 * 257  # red at 100/255
    out = read_image(write(tmp_path / "deep.png", bgr16))
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out[3, 3], [100, 0, 255])
    gray16 = np.full((8, 8), 30000, np.uint16)
    out = read_image(write(tmp_path / "deep_gray.png", gray16))
    assert out.dtype == np.uint8 and out.shape == (8, 8, 3)
    assert abs(int(out[0, 0, 0]) - round(30000 / 257)) <= 1


def test_read_mask_binarises_at_128(tmp_path: Path) -> None:
    mask = np.zeros((4, 4), np.uint8)
    mask[0] = [0, 127, 128, 255]
    out = read_mask(write(tmp_path / "m.png", mask))
    assert out.dtype == bool
    assert out[0].tolist() == [False, False, True, True]
    assert not out[1:].any()


def test_read_mask_any_colour_counts_as_polyp(tmp_path: Path) -> None:
    bgr = np.zeros((6, 6, 3), np.uint8)
    bgr[0:2, :, 2] = 255  # red (BKAI neoplastic)
    bgr[2:4, :, 1] = 255  # green (BKAI non-neoplastic)
    bgr[4, :, 0] = 200  # blue
    out = read_mask(write(tmp_path / "colour.png", bgr))
    assert out[:5].all()
    assert not out[5].any()


def test_read_mask_rgba_and_16_bit(tmp_path: Path) -> None:
    bgra = np.zeros((4, 4, 4), np.uint8)
    bgra[:2, :, :3] = 255
    bgra[..., 3] = 255  # opaque everywhere: alpha must not count as polyp
    out = read_mask(write(tmp_path / "rgba_mask.png", bgra))
    assert out[:2].all() and not out[2:].any()
    deep = np.zeros((4, 4), np.uint16)
    deep[:, :2] = 65535
    deep[:, 2] = 127 * 257
    out = read_mask(write(tmp_path / "deep_mask.png", deep))
    assert out[:, :2].all() and not out[:, 2:].any()


@pytest.mark.parametrize("content", [b"", b"this is not an image", b"\xff\xd8\xff\xe0 truncated jpeg"])
def test_unreadable_image_names_the_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "broken.jpg"
    path.write_bytes(content)
    for reader in (read_image, read_mask):
        with pytest.raises(ConvSegError, match="broken.jpg"):
            reader(path)


def test_missing_image_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConvSegError, match="absent.png"):
        read_image(tmp_path / "absent.png")


def test_list_images_skips_other_files(tmp_path: Path) -> None:
    for name in ("b.PNG", "a.jpg", "c.tif", "notes.txt", ".hidden.png"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub.png").mkdir()
    assert [p.name for p in list_images(tmp_path)] == ["a.jpg", "b.PNG", "c.tif"]


# ---------------------------------------------------------------------------- postprocessing


def test_resize_mask_keeps_bool_and_thin_structures() -> None:
    mask = np.zeros((40, 50), bool)
    mask[10:30, 24:26] = True  # a 2-pixel-wide stripe
    small = resize_mask(mask, (20, 25))
    assert small.dtype == bool and small.shape == (20, 25)
    assert small[8:12].any(axis=1).all()


def test_sigmoid_and_threshold() -> None:
    logits = np.array([[[[-1000.0, -1.0, 0.0, 1e-3, 1000.0]]]], dtype=np.float32)
    with np.errstate(all="raise"):
        prob = sigmoid(logits)
    assert prob.dtype == np.float32
    np.testing.assert_allclose(prob[0, 0, 0], [0.0, 1 / (1 + np.e), 0.5, 0.50025, 1.0], atol=1e-6)
    masks = logits_to_masks(logits, 0.5)
    assert masks.shape == (1, 1, 5)
    assert masks[0, 0].tolist() == [False, False, False, True, True]  # strictly above the threshold


def test_probability_at_resizes_to_the_source_frame() -> None:
    prob = probability_at(np.zeros((16, 16), np.float32), (40, 50))
    assert prob.shape == (40, 50)
    np.testing.assert_allclose(prob, 0.5)
