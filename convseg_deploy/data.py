"""Polyp dataset folders: Kvasir-SEG, BKAI-IGH NeoPolyp and CVC-ClinicDB layouts.

``find_samples`` detects the layout, pairs every image with its mask and fails before any
training starts when something is missing; ``split_samples`` applies the dataset's own split
files or a seeded 80/10/10 split; ``load_samples`` decodes frames once at the model's size.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from convseg_deploy.errors import ConvSegError
from convseg_deploy.imaging import list_images, read_image, read_mask, resize_image, resize_mask

# (layout name, image folder, mask folder), looked for in this order.
LAYOUTS = (
    ("kvasir-seg", "images", "masks"),
    ("bkai-igh", "train", "train_gt"),
    ("cvc-clinicdb", "Original", "Ground Truth"),
)
SPLITS = ("train", "val", "test", "all")


@dataclass(frozen=True)
class Sample:
    image: Path
    mask: Path | None  # None for image-only folders (speed-only bench, predict)

    @property
    def stem(self) -> str:
        return self.image.stem


def detect_layout(root: Path) -> tuple[str, Path, Path | None]:
    """(layout name, image folder, mask folder or None) of a dataset folder."""
    if not root.exists():
        raise ConvSegError(f"dataset folder {root} not found")
    if not root.is_dir():
        raise ConvSegError(f"dataset path {root} is not a folder: pass a folder with images/ and masks/")
    for base in (root, *sorted(p for p in root.iterdir() if p.is_dir())):  # also one level down (CVC's TIF/, PNG/)
        for name, img_dir, mask_dir in LAYOUTS:
            if (base / img_dir).is_dir() and (base / mask_dir).is_dir():
                return name, base / img_dir, base / mask_dir
    if (root / "images").is_dir():
        return "images-only", root / "images", None
    if list_images(root):
        return "images-only", root, None
    raise ConvSegError(
        f"dataset folder {root} has no known layout: expected images/ + masks/ (Kvasir-SEG), "
        "train/ + train_gt/ (BKAI-IGH) or Original/ + 'Ground Truth'/ (CVC-ClinicDB)"
    )


def find_samples(root: str | Path, require_masks: bool = True) -> list[Sample]:
    """Every image of the dataset paired with its mask (matched by file stem)."""
    root = Path(root)
    layout, img_dir, mask_dir = detect_layout(root)
    images = list_images(img_dir)
    if not images:
        raise ConvSegError(f"dataset folder {img_dir} contains no images (.jpg, .png, .tif, ...)")
    if mask_dir is None:
        if require_masks:
            raise ConvSegError(f"dataset folder {root} has images but no masks folder (masks/, train_gt/ or 'Ground Truth'/)")
        return [Sample(p, None) for p in images]
    masks = {p.stem: p for p in list_images(mask_dir)}
    samples = []
    for img in images:
        mask = masks.get(img.stem)
        if mask is None and require_masks:
            raise ConvSegError(f"image {img} has no mask in {mask_dir} (expected {mask_dir / img.stem}.*)")
        samples.append(Sample(img, mask))
    return samples


def _read_split_file(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def split_samples(samples: Sequence[Sample], split: str, root: str | Path, seed: int = 42,
                  fractions: tuple[float, float] = (0.1, 0.1)) -> list[Sample]:
    """The samples of one split: from train.txt/val.txt/test.txt beside the dataset when present,
    else a deterministic seeded split (80/10/10 by default) of the sorted stems."""
    if split not in SPLITS:
        raise ConvSegError(f"unknown split {split!r}: use one of {', '.join(SPLITS)}")
    if split == "all":
        return list(samples)
    root = Path(root)
    split_file = root / f"{split}.txt"
    if split_file.is_file():
        by_stem = {s.stem: s for s in samples}
        stems = [Path(s).stem for s in _read_split_file(split_file)]
        unknown = [s for s in stems if s not in by_stem]
        if unknown:
            raise ConvSegError(f"{split_file} lists {unknown[0]!r}, which has no image in {root}")
        return [by_stem[s] for s in stems]
    present = [f"{name}.txt" for name in SPLITS[:3] if (root / f"{name}.txt").is_file()]
    if present:  # a seeded split would mix images the split files already assign elsewhere
        raise ConvSegError(f"{root} has {', '.join(present)} but no {split}.txt: add {split_file} "
                           "(one image name per line) or remove the split files to use the seeded split")
    ordered = sorted(samples, key=lambda s: s.stem)
    order = np.random.default_rng(seed).permutation(len(ordered))
    n_val = int(round(len(ordered) * fractions[0]))
    n_test = int(round(len(ordered) * fractions[1]))
    if len(ordered) >= 3:  # every split gets at least one image when there are enough
        n_val, n_test = max(n_val, 1), max(n_test, 1)
    ranges = {"val": order[:n_val], "test": order[n_val:n_val + n_test], "train": order[n_val + n_test:]}
    return [ordered[i] for i in sorted(ranges[split])]


def load_samples(samples: Sequence[Sample], size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray | None]:
    """Decode every frame once: (N x H x W x 3 RGB uint8, N x H x W bool masks or None) at ``size``."""
    images = np.empty((len(samples), *size, 3), dtype=np.uint8)
    have_masks = all(s.mask is not None for s in samples)
    masks = np.empty((len(samples), *size), dtype=bool) if have_masks else None
    for i, sample in enumerate(samples):
        images[i] = resize_image(read_image(sample.image), size)
        if masks is not None:
            masks[i] = resize_mask(read_mask(sample.mask), size)
    return images, masks
