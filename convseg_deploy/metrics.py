"""Segmentation metrics on binary masks, usable on numpy outputs of any backend.

Counts first (tp, fp, fn, tn per image), then each score is a one-line formula. Scores are
computed per image and averaged over images, as the paper does. When a score's denominator is
zero the images agree exactly only if both masks are empty: then it scores 1, otherwise 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np

METRIC_NAMES = ("dice", "iou", "precision", "recall", "f2", "accuracy")


@dataclass(frozen=True)
class Counts:
    tp: int
    fp: int
    fn: int
    tn: int


def confusion(pred: np.ndarray, target: np.ndarray) -> Counts:
    """Pixel counts of one predicted mask against one target mask (both bool, same shape)."""
    pred = np.asarray(pred, dtype=bool)
    target = np.asarray(target, dtype=bool)
    if pred.shape != target.shape:
        raise ValueError(f"mask shapes differ: prediction {pred.shape} vs target {target.shape}")
    tp = int(np.count_nonzero(pred & target))
    fp = int(np.count_nonzero(pred & ~target))
    fn = int(np.count_nonzero(~pred & target))
    return Counts(tp, fp, fn, pred.size - tp - fp - fn)


def _ratio(num: float, den: float, both_empty: bool) -> float:
    return num / den if den else float(both_empty)


def scores(c: Counts) -> dict[str, float]:
    """All per-image scores from the counts."""
    empty = c.tp + c.fp + c.fn == 0  # nothing predicted and nothing there
    return {
        "dice": _ratio(2 * c.tp, 2 * c.tp + c.fp + c.fn, empty),
        "iou": _ratio(c.tp, c.tp + c.fp + c.fn, empty),
        "precision": _ratio(c.tp, c.tp + c.fp, empty),
        "recall": _ratio(c.tp, c.tp + c.fn, empty),
        "f2": _ratio(5 * c.tp, 5 * c.tp + 4 * c.fn + c.fp, empty),
        "accuracy": (c.tp + c.tn) / (c.tp + c.fp + c.fn + c.tn),
    }


def image_scores(pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
    return scores(confusion(pred, target))


class MetricAccumulator:
    """Averages per-image scores over a stream of batches."""

    def __init__(self) -> None:
        self.totals = dict.fromkeys(METRIC_NAMES, 0.0)
        self.images = 0

    def update(self, preds: Iterable[np.ndarray], targets: Iterable[np.ndarray]) -> None:
        for pred, target in zip(preds, targets, strict=True):
            self.add(confusion(pred, target))

    def add(self, counts: Counts) -> None:
        """One image, from its counts (what processes of a distributed run exchange)."""
        for name, value in scores(counts).items():
            self.totals[name] += value
        self.images += 1

    def result(self) -> dict[str, float | int]:
        n = max(self.images, 1)
        out: dict[str, float | int] = {name: self.totals[name] / n for name in METRIC_NAMES}
        out["images"] = self.images
        return out


def mean_dice(preds: Iterable[np.ndarray], targets: Iterable[np.ndarray]) -> float:
    """Mean per-image Dice; also the mask agreement between two backends' masks."""
    acc = MetricAccumulator()
    acc.update(preds, targets)
    return float(acc.result()["dice"])


def image_dice(preds: Iterable[np.ndarray], targets: Iterable[np.ndarray]) -> np.ndarray:
    """Dice of each image (float64, in order): ``mean_dice`` is their mean."""
    return np.array([scores(confusion(p, t))["dice"] for p, t in zip(preds, targets, strict=True)], dtype=np.float64)


def pooled_dice(preds: Iterable[np.ndarray], targets: Iterable[np.ndarray]) -> float:
    """Dice over all pixels of all images at once: a stray pixel on a polyp-free frame weighs one
    pixel, not a whole image (as it does in ``mean_dice``)."""
    total = Counts(0, 0, 0, 0)
    for p, t in zip(preds, targets, strict=True):
        c = confusion(p, t)
        total = Counts(total.tp + c.tp, total.fp + c.fp, total.fn + c.fn, total.tn + c.tn)
    return scores(total)["dice"]
