"""Images decoded as a viewer shows them: orientation, float and 16-bit ranges, palette/CMYK/alpha, a pixel limit."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from convseg_deploy.errors import ConvSegError
from convseg_deploy.imaging import MAX_PIXELS, read_image

# A 20x40 RGB frame: left half red, right half blue, so orientation and colour are both visible.
FRAME = np.zeros((20, 40, 3), np.uint8)
FRAME[:, :20] = (200, 30, 30)
FRAME[:, 20:] = (30, 30, 200)


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    img = Image.fromarray(FRAME)
    exif = img.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to view": the stored landscape frame is a portrait one
    img.save(tmp_path / "portrait.jpg", quality=95, exif=exif)
    rgb = read_image(tmp_path / "portrait.jpg")
    assert rgb.shape == (40, 20, 3)
    assert rgb[2, 10, 0] > 150 and rgb[-3, 10, 2] > 150  # red on top, blue below after the rotation


def test_float_tiff_in_0_1_is_scaled_not_black(tmp_path: Path) -> None:
    values = FRAME.astype(np.float32) / 255.0
    assert cv2.imwrite(str(tmp_path / "float.tiff"), cv2.cvtColor(values, cv2.COLOR_RGB2BGR))
    rgb = read_image(tmp_path / "float.tiff")
    assert rgb.dtype == np.uint8 and np.abs(rgb.astype(int) - FRAME).max() <= 1


def test_float_image_outside_0_255_is_stretched_from_its_range(tmp_path: Path) -> None:
    gray = np.linspace(-1000.0, 3000.0, 40 * 20, dtype=np.float32).reshape(20, 40)
    Image.fromarray(gray, mode="F").save(tmp_path / "wide.tiff")
    rgb = read_image(tmp_path / "wide.tiff")
    assert rgb[0, 0, 0] == 0 and rgb[-1, -1, 0] == 255 and 120 <= rgb[10, 20, 0] <= 135


def test_16_bit_png_is_scaled_down(tmp_path: Path) -> None:
    deep = FRAME.astype(np.uint16) * 257
    assert cv2.imwrite(str(tmp_path / "deep.png"), cv2.cvtColor(deep, cv2.COLOR_RGB2BGR))
    assert np.array_equal(read_image(tmp_path / "deep.png"), FRAME)


@pytest.mark.parametrize("mode, suffix", [("P", "png"), ("CMYK", "jpg"), ("RGBA", "png"), ("LA", "png")])
def test_palette_cmyk_and_alpha_become_rgb(tmp_path: Path, mode: str, suffix: str) -> None:
    path = tmp_path / f"frame.{suffix}"
    Image.fromarray(FRAME).convert(mode).save(path, quality=95) if suffix == "jpg" else \
        Image.fromarray(FRAME).convert(mode).save(path)
    rgb = read_image(path)
    expected = np.asarray(Image.fromarray(FRAME).convert(mode).convert("RGB"))  # what a viewer shows
    assert rgb.shape == (20, 40, 3) and np.abs(rgb.astype(int) - expected.astype(int)).max() <= 12


def test_a_decompression_bomb_is_refused_before_decoding(tmp_path: Path) -> None:
    path = tmp_path / "bomb.png"
    Image.new("1", (16000, 16000)).save(path)  # 256 MP of zeros: a few KB on disk, 768 MB decoded
    assert path.stat().st_size < 2_000_000
    with pytest.raises(ConvSegError) as info:
        read_image(path)
    message = str(info.value)
    assert "16000x16000 (256 MP), above the limit of 50 MP" in message and "--max-pixels" in message
    assert MAX_PIXELS == 50_000_000


def test_the_pixel_limit_can_be_raised_and_lowered(tmp_path: Path) -> None:
    Image.fromarray(FRAME).save(tmp_path / "small.png")
    with pytest.raises(ConvSegError, match="above the limit"):
        read_image(tmp_path / "small.png", max_pixels=799)
    assert read_image(tmp_path / "small.png", max_pixels=800).shape == (20, 40, 3)
