"""Per-image segmentation metrics against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from convseg_deploy.evaluate import evaluate_masks
from convseg_deploy.metrics import METRIC_NAMES, Counts, MetricAccumulator, confusion, image_scores, mean_dice, scores


def masks(*rows: str) -> np.ndarray:
    return np.array([[c == "1" for c in row] for row in rows])


# 4 x 4 frames: tp 3, fp 1, fn 2, tn 10
PRED = masks("1100",
             "1000",
             "0001",
             "0000")
TARGET = masks("1100",
               "1110",
               "0000",
               "0000")


def test_confusion_counts_by_hand() -> None:
    assert confusion(PRED, TARGET) == Counts(tp=3, fp=1, fn=2, tn=10)


def test_scores_by_hand() -> None:
    s = image_scores(PRED, TARGET)
    assert s["dice"] == pytest.approx(6 / 9)  # 2tp / (2tp + fp + fn)
    assert s["iou"] == pytest.approx(3 / 6)  # tp / (tp + fp + fn)
    assert s["precision"] == pytest.approx(3 / 4)
    assert s["recall"] == pytest.approx(3 / 5)
    assert s["f2"] == pytest.approx(15 / 24)  # 5tp / (5tp + 4fn + fp)
    assert s["accuracy"] == pytest.approx(13 / 16)
    p, r = s["precision"], s["recall"]
    assert s["f2"] == pytest.approx(5 * p * r / (4 * p + r))  # the textbook F-beta, beta = 2
    assert set(s) == set(METRIC_NAMES)


def test_perfect_prediction_scores_one() -> None:
    assert all(v == pytest.approx(1.0) for v in image_scores(TARGET, TARGET).values())


def test_empty_prediction_on_empty_mask_scores_one() -> None:
    empty = np.zeros((5, 7), dtype=bool)
    assert image_scores(empty, empty) == dict.fromkeys(METRIC_NAMES, 1.0)


def test_empty_prediction_on_a_polyp_scores_zero() -> None:
    target = masks("0110", "0110", "0000")
    s = image_scores(np.zeros_like(target), target)
    assert s["dice"] == s["iou"] == s["recall"] == s["f2"] == 0.0
    assert s["precision"] == 0.0  # 0/0, but the frames disagree
    assert s["accuracy"] == pytest.approx(8 / 12)


def test_false_alarm_on_an_empty_mask_scores_zero() -> None:
    pred = masks("1000", "0000")
    s = image_scores(pred, np.zeros_like(pred))
    assert s["dice"] == s["iou"] == s["precision"] == s["recall"] == s["f2"] == 0.0
    assert s["accuracy"] == pytest.approx(7 / 8)


def test_scores_from_counts_without_zero_division() -> None:
    assert scores(Counts(0, 0, 0, 100))["dice"] == 1.0
    assert scores(Counts(0, 3, 0, 0))["recall"] == 0.0
    assert scores(Counts(0, 0, 3, 0))["precision"] == 0.0


def test_shapes_must_match() -> None:
    with pytest.raises(ValueError, match="shape"):
        confusion(np.zeros((4, 4), bool), np.zeros((4, 5), bool))


def test_accumulator_averages_per_image_not_per_pixel() -> None:
    # image 1: a small polyp found exactly (dice 1); image 2: a large polyp missed entirely (dice 0)
    small_t = np.zeros((10, 10), bool)
    small_t[0, 0] = True
    large_t = np.zeros((10, 10), bool)
    large_t[:5] = True
    acc = MetricAccumulator()
    acc.update([small_t], [small_t])
    acc.update([np.zeros_like(large_t)], [large_t])
    result = acc.result()
    assert result["images"] == 2
    assert result["dice"] == pytest.approx(0.5)  # pooled pixels would give 2/52
    assert result["recall"] == pytest.approx(0.5)
    assert result["precision"] == pytest.approx(0.5)  # 1 and 0 (nothing predicted on a polyp)
    assert result["accuracy"] == pytest.approx((1.0 + 0.5) / 2)
    assert set(result) == {*METRIC_NAMES, "images"}


def test_accumulator_matches_the_mean_of_image_scores_on_random_masks() -> None:
    rng = np.random.default_rng(0)
    preds = rng.random((6, 12, 9)) > 0.6
    targets = rng.random((6, 12, 9)) > 0.5
    result = evaluate_masks(preds, targets)
    per_image = [image_scores(p, t) for p, t in zip(preds, targets)]
    for name in METRIC_NAMES:
        assert result[name] == pytest.approx(np.mean([s[name] for s in per_image]))
    assert result["images"] == 6
    assert mean_dice(preds, targets) == pytest.approx(result["dice"])


def test_accumulator_refuses_unequal_batches() -> None:
    with pytest.raises(ValueError):
        MetricAccumulator().update([np.zeros((2, 2), bool)] * 2, [np.zeros((2, 2), bool)])


def test_image_and_pooled_dice() -> None:
    from convseg_deploy.metrics import image_dice, mean_dice, pooled_dice

    big = np.zeros((8, 8), bool)
    big[:4] = True  # 32 pixels
    stray = np.zeros((8, 8), bool)
    stray[0, 0] = True
    preds, truth = [big, stray], [big, np.zeros((8, 8), bool)]
    assert image_dice(preds, truth).tolist() == [1.0, 0.0]
    assert mean_dice(preds, truth) == 0.5
    # pooled: one stray pixel against 32 right ones, not a whole frame lost
    assert pooled_dice(preds, truth) == pytest.approx(64 / 65)
