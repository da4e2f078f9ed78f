"""BCE + soft Dice loss on logits (the reference recipe)."""

from __future__ import annotations

import torch
from torch.nn import functional as F

SMOOTH = 1.0


def bce_dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean BCE plus (1 - soft Dice), both on the N x 1 x H x W logits; computed in float32."""
    logits, target = logits.float(), target.float()
    bce = F.binary_cross_entropy_with_logits(logits, target)
    prob = torch.sigmoid(logits).flatten(1)
    flat = target.flatten(1)
    dice = (2 * (prob * flat).sum(1) + SMOOTH) / (prob.sum(1) + flat.sum(1) + SMOOTH)
    return bce + (1 - dice).mean()
