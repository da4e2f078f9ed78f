"""Dataset folders: layout detection, image/mask pairing, splits and errors naming the culprit."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from convseg_deploy.data import Sample, detect_layout, find_samples, load_samples, split_samples
from convseg_deploy.errors import ConvSegError

SIZE = (64, 64)


def write(path: Path, array: np.ndarray, params: list[int] | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), array, params or [])
    return path


def frame(h: int, w: int, seed: int) -> np.ndarray:
    """A BGR frame with some structure (smooth gradient plus noise)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255 // w, yy * 255 // h, np.full((h, w), 90)], axis=2)
    return np.clip(base + rng.integers(-20, 20, (h, w, 3)), 0, 255).astype(np.uint8)


def disc_mask(h: int, w: int) -> np.ndarray:
    mask = np.zeros((h, w), np.uint8)
    cv2.circle(mask, (w // 2, h // 2), min(h, w) // 3, 255, -1)
    return mask


@pytest.fixture()
def kvasir(tmp_path: Path) -> Path:
    """Kvasir-SEG layout: colour JPEG, grayscale PNG and RGBA PNG frames of various sizes;
    masks as JPEG (with artefacts) and PNG."""
    root = tmp_path / "Kvasir-SEG"
    write(root / "images" / "cju0.jpg", frame(40, 50, 0))
    write(root / "masks" / "cju0.jpg", disc_mask(40, 50), [cv2.IMWRITE_JPEG_QUALITY, 40])
    write(root / "images" / "cju1.png", frame(50, 40, 1)[:, :, 1])  # grayscale
    flat = np.zeros((50, 40), np.uint8)
    flat[:, :20] = 110  # just below 128: background after JPEG noise too
    flat[:, 20:] = 150  # just above 128: polyp
    write(root / "masks" / "cju1.jpg", flat, [cv2.IMWRITE_JPEG_QUALITY, 90])
    bgra = np.dstack([frame(36, 60, 2), np.full((36, 60), 255, np.uint8)])
    bgra[:, :, :3] = (255, 0, 0)  # pure blue, opaque
    write(root / "images" / "cju2.png", bgra)
    write(root / "masks" / "cju2.png", disc_mask(36, 60))
    return root


def test_kvasir_layout_pairs_images_with_masks_by_stem(kvasir: Path) -> None:
    layout, img_dir, mask_dir = detect_layout(kvasir)
    assert (layout, img_dir, mask_dir) == ("kvasir-seg", kvasir / "images", kvasir / "masks")
    samples = find_samples(kvasir)
    assert [s.stem for s in samples] == ["cju0", "cju1", "cju2"]
    assert [s.mask.name for s in samples] == ["cju0.jpg", "cju1.jpg", "cju2.png"]
    assert all(s.image.parent.name == "images" for s in samples)


def test_load_samples_decodes_any_frame_at_the_model_size(kvasir: Path) -> None:
    images, masks = load_samples(find_samples(kvasir), SIZE)
    assert images.shape == (3, *SIZE, 3) and images.dtype == np.uint8
    assert masks is not None and masks.shape == (3, *SIZE) and masks.dtype == bool
    gray = images[1].astype(int)
    assert (gray[..., 0] == gray[..., 1]).all() and (gray[..., 1] == gray[..., 2]).all()
    np.testing.assert_array_equal(images[2][10, 10], [0, 0, 255])  # RGBA blue frame read as RGB blue


def test_jpeg_masks_are_binarised_at_128(kvasir: Path) -> None:
    raw = cv2.imread(str(kvasir / "masks" / "cju0.jpg"), cv2.IMREAD_UNCHANGED)
    assert ((raw > 10) & (raw < 245)).any()  # the file really has compression artefacts
    _, masks = load_samples(find_samples(kvasir), (40, 50))  # cju0's own size: no resizing
    assert masks is not None
    disc = disc_mask(40, 50) > 0
    mismatch = masks[0] != disc
    assert mismatch.mean() < 0.03  # only at the disc's rim
    assert masks[0][20, 25] and not masks[0][0, 0]
    flat = masks[1]  # 110 | 150 halves (split at x = 20 of 40), stretched to 50 wide
    assert not flat[:, :22].any() and flat[:, 28:].all()


def test_bkai_layout_colour_masks_count_any_colour(tmp_path: Path) -> None:
    root = tmp_path / "bkai-igh-neopolyp"
    for i, (h, w) in enumerate([(40, 50), (48, 48)]):
        write(root / "train" / f"{i:03d}.jpeg", frame(h, w, i))
        mask = np.zeros((h, w, 3), np.uint8)
        mask[: h // 2, : w // 2] = (0, 0, 255)  # red: neoplastic
        mask[h // 2:, w // 2:] = (0, 255, 0)  # green: non-neoplastic
        write(root / "train_gt" / f"{i:03d}.jpeg", mask, [cv2.IMWRITE_JPEG_QUALITY, 90])
    layout, img_dir, mask_dir = detect_layout(root)
    assert (layout, img_dir.name, mask_dir.name) == ("bkai-igh", "train", "train_gt")
    samples = find_samples(root)
    assert [s.stem for s in samples] == ["000", "001"]
    _, masks = load_samples(samples, SIZE)
    assert masks is not None
    for m in masks:
        assert m[5:27, 5:27].all()  # red quarter
        assert m[37:59, 37:59].all()  # green quarter
        assert not m[5:27, 37:59].any() and not m[37:59, 5:27].any()


def _cvc(base: Path) -> None:
    for i in (1, 2, 10):
        write(base / "Original" / f"{i}.tif", frame(40, 50, i))
        write(base / "Ground Truth" / f"{i}.tif", disc_mask(40, 50))


def test_cvc_clinicdb_layout_with_tif_files(tmp_path: Path) -> None:
    root = tmp_path / "CVC-ClinicDB"
    _cvc(root)
    layout, img_dir, mask_dir = detect_layout(root)
    assert (layout, img_dir, mask_dir) == ("cvc-clinicdb", root / "Original", root / "Ground Truth")
    samples = find_samples(root)
    assert sorted(s.stem for s in samples) == ["1", "10", "2"]
    assert all(s.mask is not None and s.mask.stem == s.stem and s.mask.suffix == ".tif" for s in samples)
    images, masks = load_samples(samples, SIZE)
    assert images.shape == (3, *SIZE, 3) and masks is not None and masks[:, 32, 32].all()


def test_cvc_one_level_down(tmp_path: Path) -> None:
    root = tmp_path / "CVC-ClinicDB"
    _cvc(root / "TIF")
    layout, img_dir, _ = detect_layout(root)
    assert layout == "cvc-clinicdb" and img_dir == root / "TIF" / "Original"
    assert len(find_samples(root)) == 3


def test_split_files_are_used_when_present(kvasir: Path) -> None:
    (kvasir / "train.txt").write_text("cju2\ncju0.jpg\n")
    (kvasir / "val.txt").write_text("cju1\n\n")
    (kvasir / "test.txt").write_text("")
    samples = find_samples(kvasir)
    assert [s.stem for s in split_samples(samples, "train", kvasir)] == ["cju2", "cju0"]
    assert [s.stem for s in split_samples(samples, "val", kvasir)] == ["cju1"]
    assert split_samples(samples, "test", kvasir) == []
    assert split_samples(samples, "all", kvasir) == samples


def test_a_split_without_its_file_does_not_fall_back_to_a_random_split(kvasir: Path) -> None:
    # with train.txt present, a seeded "test" split would reuse training images (leakage)
    (kvasir / "train.txt").write_text("cju0\ncju1\n")
    (kvasir / "val.txt").write_text("cju2\n")
    samples = find_samples(kvasir)
    with pytest.raises(ConvSegError) as err:
        split_samples(samples, "test", kvasir)
    assert str(kvasir / "test.txt") in str(err.value)
    assert len(split_samples(samples, "all", kvasir)) == 3


def test_split_file_naming_an_unknown_image(kvasir: Path) -> None:
    (kvasir / "val.txt").write_text("cju1\nghost\n")
    with pytest.raises(ConvSegError) as err:
        split_samples(find_samples(kvasir), "val", kvasir)
    assert "ghost" in str(err.value) and str(kvasir / "val.txt") in str(err.value)


def test_unknown_split_name(kvasir: Path) -> None:
    with pytest.raises(ConvSegError, match="validation"):
        split_samples(find_samples(kvasir), "validation", kvasir)


def _fake_samples(n: int) -> list[Sample]:
    return [Sample(Path(f"/nowhere/images/frame_{i:03d}.jpg"), Path(f"/nowhere/masks/frame_{i:03d}.png"))
            for i in range(n)]


def test_seeded_split_is_80_10_10_disjoint_covering_and_stable(tmp_path: Path) -> None:
    samples = _fake_samples(50)
    parts = {name: split_samples(samples, name, tmp_path, seed=42) for name in ("train", "val", "test")}
    assert [len(parts[n]) for n in ("train", "val", "test")] == [40, 5, 5]
    stems = {n: {s.stem for s in p} for n, p in parts.items()}
    assert not (stems["train"] & stems["val"]) and not (stems["train"] & stems["test"]) and not (stems["val"] & stems["test"])
    assert stems["train"] | stems["val"] | stems["test"] == {s.stem for s in samples}
    # the same on every call, whatever order the samples come in
    shuffled = list(reversed(samples))
    for name, part in parts.items():
        assert split_samples(samples, name, tmp_path, seed=42) == part
        assert {s.stem for s in split_samples(shuffled, name, tmp_path, seed=42)} == stems[name]
    # not simply the first/last files, and another seed gives another split
    assert stems["val"] != {s.stem for s in samples[:5]} and stems["val"] != {s.stem for s in samples[-5:]}
    assert {s.stem for s in split_samples(samples, "val", tmp_path, seed=7)} != stems["val"]


def test_seeded_split_of_small_datasets_gives_every_split_an_image(tmp_path: Path) -> None:
    samples = _fake_samples(4)
    sizes = [len(split_samples(samples, n, tmp_path)) for n in ("train", "val", "test")]
    assert sizes == [2, 1, 1]


def test_seeded_split_of_the_synthetic_dataset(synth_data: Path) -> None:
    samples = find_samples(synth_data)
    assert len(samples) == 80
    sizes = [len(split_samples(samples, n, synth_data)) for n in ("train", "val", "test")]
    assert sizes == [64, 8, 8]


# ---------------------------------------------------------------------------- errors


def test_image_without_mask_names_the_image(kvasir: Path) -> None:
    lonely = write(kvasir / "images" / "cju9.jpg", frame(40, 50, 9))
    with pytest.raises(ConvSegError) as err:
        find_samples(kvasir)
    assert str(lonely) in str(err.value)
    assert [s.mask for s in find_samples(kvasir, require_masks=False) if s.stem == "cju9"] == [None]


def test_unreadable_image_names_the_file(kvasir: Path) -> None:
    broken = kvasir / "images" / "cju5.jpg"
    broken.write_bytes(b"not really a jpeg")
    write(kvasir / "masks" / "cju5.png", disc_mask(40, 50))
    samples = find_samples(kvasir)
    with pytest.raises(ConvSegError) as err:
        load_samples(samples, SIZE)
    assert str(broken) in str(err.value)


def test_unreadable_mask_names_the_file(kvasir: Path) -> None:
    broken = kvasir / "masks" / "cju1.jpg"
    broken.write_bytes(b"")
    with pytest.raises(ConvSegError) as err:
        load_samples(find_samples(kvasir), SIZE)
    assert str(broken) in str(err.value)


def test_empty_image_folder_is_named(tmp_path: Path) -> None:
    root = tmp_path / "empty-kvasir"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    with pytest.raises(ConvSegError) as err:
        find_samples(root)
    assert str(root / "images") in str(err.value)


def test_empty_folder_is_named(tmp_path: Path) -> None:
    root = tmp_path / "nothing-here"
    root.mkdir()
    with pytest.raises(ConvSegError) as err:
        find_samples(root)
    assert str(root) in str(err.value)


def test_unknown_layout_is_named(tmp_path: Path) -> None:
    root = tmp_path / "odd"
    write(root / "frames" / "a.png", frame(40, 50, 0))
    write(root / "labels" / "a.png", disc_mask(40, 50))
    with pytest.raises(ConvSegError) as err:
        find_samples(root)
    message = str(err.value)
    assert str(root) in message and "images/" in message


def test_images_without_any_mask_folder(tmp_path: Path) -> None:
    root = tmp_path / "frames-only"
    write(root / "images" / "a.png", frame(40, 50, 0))
    with pytest.raises(ConvSegError, match="no masks"):
        find_samples(root)
    assert [s.mask for s in find_samples(root, require_masks=False)] == [None]


def test_missing_or_file_dataset_path(tmp_path: Path) -> None:
    with pytest.raises(ConvSegError, match="not found"):
        find_samples(tmp_path / "absent")
    file = tmp_path / "file.txt"
    file.write_text("x")
    with pytest.raises(ConvSegError, match="not a folder"):
        find_samples(file)
