"""Accuracy of any runner on a dataset split: per-image metrics averaged over images."""

from __future__ import annotations

import numpy as np

from convseg_deploy.batching import iter_batches
from convseg_deploy.imaging import logits_to_masks, preprocess
from convseg_deploy.metrics import MetricAccumulator
from convseg_deploy.runtime.base import Runner


def predict_masks(runner: Runner, images: np.ndarray, batch_size: int = 8) -> np.ndarray:
    """N x H x W bool masks of RGB uint8 frames already at the runner's input size."""
    out = []
    for sl in iter_batches(len(images), batch_size):
        out.append(logits_to_masks(runner.infer(preprocess(images[sl], runner.preprocess)), runner.threshold))
    return np.concatenate(out) if out else np.empty((0, *runner.preprocess.size), dtype=bool)


def evaluate_masks(preds: np.ndarray, targets: np.ndarray) -> dict[str, float | int]:
    acc = MetricAccumulator()
    acc.update(preds, targets)
    return acc.result()


def evaluate_runner(runner: Runner, images: np.ndarray, masks: np.ndarray, batch_size: int = 8) -> dict[str, float | int]:
    """Dice, IoU, precision, recall, F2, accuracy and the image count of ``runner`` on the frames."""
    return evaluate_masks(predict_masks(runner, images, batch_size), masks)
