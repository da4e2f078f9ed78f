"""Tests for the synthetic colonoscopy dataset generator (small 64x64 frames, so they run fast)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from convseg_deploy import synth
from convseg_deploy.errors import ConvSegError
from convseg_deploy.synth import generate_dataset, render_frame, write_video


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _masks(root: Path) -> list[np.ndarray]:
    return [cv2.imread(str(p), cv2.IMREAD_UNCHANGED) for p in sorted((root / "masks").glob("*.png"))]


def test_same_seed_gives_identical_bytes_and_other_seed_differs(tmp_path: Path) -> None:
    a = generate_dataset(tmp_path / "a", count=6, size=64, seed=3)
    b = generate_dataset(tmp_path / "b", count=6, size=64, seed=3)
    c = generate_dataset(tmp_path / "c", count=6, size=64, seed=4)
    assert _files(a) == _files(b)
    files_a, files_c = _files(a), _files(c)
    assert files_a.keys() == files_c.keys()
    assert any(files_a[k] != files_c[k] for k in files_a if k.startswith("images/"))


def test_frames_depend_only_on_seed_and_index(tmp_path: Path) -> None:
    small = _files(generate_dataset(tmp_path / "small", count=3, size=64, seed=7))
    large = _files(generate_dataset(tmp_path / "large", count=6, size=64, seed=7))
    for name, data in small.items():
        if name != "README.txt":
            assert large[name] == data


def test_layout_matches_kvasir_seg(tmp_path: Path) -> None:
    out = generate_dataset(tmp_path / "ds", count=5, size=64, seed=1)
    assert out == tmp_path / "ds"
    images = sorted(p.stem for p in (out / "images").iterdir())
    masks = sorted(p.stem for p in (out / "masks").iterdir())
    assert images == masks == [f"synth_{i:05d}" for i in range(5)]
    assert all(p.suffix == ".jpg" for p in (out / "images").iterdir())
    assert all(p.suffix == ".png" for p in (out / "masks").iterdir())
    image = cv2.imread(str(out / "images" / "synth_00000.jpg"), cv2.IMREAD_UNCHANGED)
    assert image.shape == (64, 64, 3) and image.dtype == np.uint8
    assert {p.name for p in out.iterdir()} == {"images", "masks", "README.txt"}
    readme = (out / "README.txt").read_text()
    assert "synthetic" in readme.lower() and "seed=1" in readme and "count=5" in readme and "64x64" in readme


def test_mask_files_are_exact_binary_masks(tmp_path: Path) -> None:
    out = generate_dataset(tmp_path / "ds", count=8, size=64, seed=2, empty_fraction=0.0)
    masks = _masks(out)
    assert len(masks) == 8
    for i, mask in enumerate(masks):
        assert mask.shape == (64, 64) and mask.dtype == np.uint8
        assert set(np.unique(mask)) <= {0, 255}
        # PNG is lossless: the file holds exactly the mask render_frame made.
        _, expected = render_frame(np.random.default_rng([2, i]), 64, empty_fraction=0.0)
        np.testing.assert_array_equal(mask, expected)


def test_render_frame_shapes_and_types() -> None:
    image, mask = render_frame(np.random.default_rng(0), 64)
    assert image.shape == (64, 64, 3) and image.dtype == np.uint8
    assert mask.shape == (64, 64) and mask.dtype == np.uint8
    image, mask = render_frame(np.random.default_rng(0), 128)
    assert image.shape == (128, 128, 3) and mask.shape == (128, 128)


def test_image_agrees_with_mask() -> None:
    """Polyp pixels differ in colour from the mucosa around them, and the image has edges on the
    mask outline, so a mask shifted off its polyp would fail both checks."""
    colour_gaps, edge_ratios = [], []
    kernel = np.ones((3, 3), np.uint8)
    for i in range(30):
        image, mask = render_frame(np.random.default_rng([11, i]), 64, empty_fraction=0.0)
        inner = cv2.erode(mask, kernel) > 0
        ring = (cv2.dilate(mask, np.ones((7, 7), np.uint8)) > 0) & (mask == 0)
        if inner.any() and ring.any():
            colour_gaps.append(np.abs(image[inner].mean(0) - image[ring].mean(0)).max())
        gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)
        grad = np.hypot(cv2.Sobel(gray, cv2.CV_32F, 1, 0), cv2.Sobel(gray, cv2.CV_32F, 0, 1))
        outline = cv2.morphologyEx(mask, cv2.MORPH_GRADIENT, kernel) > 0
        edge_ratios.append(grad[outline].mean() / grad[~outline].mean())
    assert np.mean(colour_gaps) > 6  # on average clearly different ...
    assert min(colour_gaps) < np.mean(colour_gaps)  # ... but not one fixed contrast
    assert np.median(edge_ratios) > 1.5


def test_polyps_are_not_a_single_flat_colour() -> None:
    """Shading and texture: pixel values inside a polyp spread, and hue varies between polyps."""
    spreads, means = [], []
    for i in range(20):
        image, mask = render_frame(np.random.default_rng([5, i]), 64, empty_fraction=0.0)
        inner = cv2.erode(mask, np.ones((3, 3), np.uint8)) > 0
        if inner.sum() > 20:
            pixels = image[inner].astype(np.float32)
            spreads.append(pixels.std(0).mean())
            means.append(pixels.mean(0) / pixels.mean())
    assert np.median(spreads) > 4
    assert np.std(np.array(means), axis=0).max() > 0.03


def test_some_frames_are_empty_and_most_are_not(tmp_path: Path) -> None:
    out = generate_dataset(tmp_path / "ds", count=40, size=64, seed=0)
    empty = sum(not mask.any() for mask in _masks(out))
    assert 1 <= empty <= 15


def test_zero_to_three_polyps_per_frame() -> None:
    counts = []
    for i in range(60):
        _, mask = render_frame(np.random.default_rng([9, i]), 64)
        counts.append(cv2.connectedComponents(mask)[0] - 1)  # overlapping polyps merge, so <=
    assert min(counts) == 0 and max(counts) <= 3 and max(counts) >= 2
    for i in range(10):
        assert render_frame(np.random.default_rng([9, i]), 64, empty_fraction=0.0)[1].any()
        assert not render_frame(np.random.default_rng([9, i]), 64, empty_fraction=1.0)[1].any()


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"count": 0}, "count"),
        ({"count": 2.5}, "count"),
        ({"size": 40}, "size"),
        ({"size": 16}, "size"),
        ({"size": 0}, "size"),
        ({"seed": -1}, "seed"),
        ({"empty_fraction": 1.5}, "empty_fraction"),
    ],
)
def test_bad_arguments_raise_one_line_errors(tmp_path: Path, kwargs: dict, words: str) -> None:
    args = {"count": 2, "size": 64, **kwargs}
    with pytest.raises(ConvSegError) as info:
        generate_dataset(tmp_path / "ds", **args)
    assert words in str(info.value) and "\n" not in str(info.value)
    assert not (tmp_path / "ds").exists()


def test_render_frame_rejects_bad_size() -> None:
    with pytest.raises(ConvSegError, match="size"):
        render_frame(np.random.default_rng(0), 50)


def test_non_empty_out_dir_is_not_overwritten(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(ConvSegError, match="choose another folder or delete it"):
        generate_dataset(out, count=2, size=64)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(ConvSegError):
        generate_dataset(a_file, count=2, size=64)
    assert a_file.read_text() == "x"


def test_existing_empty_out_dir_is_filled(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    out.mkdir()
    generate_dataset(out, count=2, size=64)
    assert len(list((out / "images").iterdir())) == 2


def test_unwritable_parent_is_reported(tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a folder should be")
    with pytest.raises(ConvSegError, match="cannot create output folder"):
        generate_dataset(blocker / "sub" / "ds", count=1, size=64)


def test_failure_midway_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = synth.render_frame
    calls = []

    def flaky(rng: np.random.Generator, size: int, **kwargs: float) -> tuple[np.ndarray, np.ndarray]:
        calls.append(1)
        if len(calls) > 3:
            raise RuntimeError("simulated crash")
        return real(rng, size, **kwargs)

    monkeypatch.setattr(synth, "render_frame", flaky)
    parent = tmp_path / "parent"
    parent.mkdir()
    with pytest.raises(RuntimeError, match="simulated crash"):
        generate_dataset(parent / "ds", count=10, size=64)
    assert len(calls) == 4
    assert list(parent.iterdir()) == []


def test_dataset_folder_is_readable_by_others(tmp_path: Path) -> None:
    out = generate_dataset(tmp_path / "ds", count=1, size=64)
    assert out.stat().st_mode & 0o055 == 0o055


def test_write_video_has_drifting_frames(tmp_path: Path) -> None:
    path = tmp_path / "clip.mp4"
    try:
        assert write_video(path, count=6, size=64, seed=1, fps=10) == path
    except ConvSegError as exc:  # an OpenCV build without a video encoder
        pytest.skip(str(exc))
    assert [p.name for p in tmp_path.iterdir()] == ["clip.mp4"]
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame.astype(np.float32))
    capture.release()
    assert len(frames) == 6 and frames[0].shape == (64, 64, 3)
    assert 0 < np.abs(frames[0] - frames[-1]).mean() < 60


def test_write_video_validates(tmp_path: Path) -> None:
    with pytest.raises(ConvSegError, match="count"):
        write_video(tmp_path / "v.mp4", count=0, size=64)
    with pytest.raises(ConvSegError, match="fps"):
        write_video(tmp_path / "v.mp4", count=2, size=64, fps=0)
