"""`slim`: prune a trained checkpoint to a FLOPs budget, fine-tune it with distillation, bound its Dice.

1. Checks, before any work: the budget lies in (0, 1); ModelOpt is installed; the checkpoint is
   not already at or below the budget; the data's frames have the checkpoint's size.
2. FastNAS (``convseg_deploy.prune``) narrows the channels until the model costs at most
   ``flops`` x the unpruned model's FLOPs, scored by Dice on a few training frames. RUN/pruned.pt.
3. ``train``'s loop (progress, resume, DDP) fine-tunes it on the training split (one cycle), with the
   parent's probabilities as soft targets next to the usual loss (``--distill``).
4. The best validation Dice must lie within ``max_dice_drop`` of the parent's on the same
   frames; a miss renames RUN/best.pt to RUN/missed-best.pt and is an error naming the Dice.

Budgets are fractions of the *unpruned* model's FLOPs, also when slimming a slimmed checkpoint.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from convseg_deploy.checkpoint import load_model, read_checkpoint, save_checkpoint
from convseg_deploy.config import TrainConfig
from convseg_deploy.data import find_samples, split_samples
from convseg_deploy.errors import ConvSegError
from convseg_deploy.fsutil import ensure_dir, sha256_file
from convseg_deploy.imaging import preprocess
from convseg_deploy.model import ConvSegNet, count_parameters
from convseg_deploy.prune import (DEFAULT_CHANNEL_DIVISOR, DEFAULT_RATIO_STEP, model_flops, prune_to_flops,
                                  require_modelopt)

SLIM_RECORD = "slim"  # key of the checkpoint's "extra" that says where a slimmed model came from
PRUNED_NAME = "pruned.pt"  # the pruned model before fine-tuning
BEST_NAME = "best.pt"
MISSED_NAME = "missed-best.pt"  # the best checkpoint of a run that missed the Dice bound
SEARCH_STATE_NAME = "prune-search.pth"  # ModelOpt's search checkpoint (sensitivity map)


@dataclass(frozen=True)
class SlimOptions:
    """What ``slim`` does.

    flops: budget as a fraction of the unpruned model's FLOPs, in (0, 1).
    epochs: fine-tuning epochs (early stopping as in train).
    max_dice_drop: the largest validation Dice loss against the parent that passes.
    distill: add the parent's probabilities as soft targets to the loss.
    distill_weight: weight of that term next to BCE + Dice.
    lr: peak learning rate of the fine-tuning's one-cycle schedule.
    search_frames: training frames that score each candidate and re-calibrate its BatchNorm.
    channel_divisor: channel counts are multiples of this.
    ratio_step: the candidate widths are multiples of this fraction of each layer's width.
    """

    flops: float
    epochs: int = 6
    max_dice_drop: float = 0.01
    distill: bool = True
    distill_weight: float = 1.0
    batch_size: int = 8
    # Peak of train's one-cycle schedule (warm-up, cosine decay to lr / 100), as make demo trains the
    # parent: a pruned model recovers in a few epochs only with a large rate (docs/slim.md: measured)
    lr: float = 2e-3
    device: str = "auto"
    seed: int = 42
    search_frames: int = 16
    channel_divisor: int = DEFAULT_CHANNEL_DIVISOR
    ratio_step: float = DEFAULT_RATIO_STEP


class SoftTargets:
    """Distillation term: BCE of the student's logits against the parent's probabilities."""

    def __init__(self, parent: ConvSegNet, weight: float) -> None:
        self.parent = parent.eval()
        for p in self.parent.parameters():
            p.requires_grad_(False)
        self.weight = weight

    def __call__(self, x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        if next(self.parent.parameters()).device != x.device:  # each torchrun rank has its own device
            self.parent.to(x.device)
        with torch.no_grad():
            target = torch.sigmoid(self.parent(x).float())
        return self.weight * torch.nn.functional.binary_cross_entropy_with_logits(logits.float(), target)


def check_budget(flops: float) -> None:
    if not 0.0 < flops < 1.0:
        raise ConvSegError(f"--flops {flops} is not a budget: give the fraction of the unpruned model's FLOPs to keep, "
                           "between 0 and 1 (e.g. 0.5)")


def _record(ckpt: dict[str, Any]) -> dict[str, Any]:
    return dict(ckpt.get("extra", {}).get(SLIM_RECORD) or {})


def check_not_below_budget(ckpt: dict[str, Any], path: Path, flops: float) -> None:
    record = _record(ckpt)
    if record and record["flops_after"] <= flops * record["flops_unpruned"]:
        have = record["flops_after"] / record["flops_unpruned"]
        raise ConvSegError(f"checkpoint {path} is already slimmed to {have:.1%} of the unpruned model's FLOPs, at or below "
                           f"the budget --flops {flops}: nothing to prune (pass a smaller budget, or its parent)")


def check_data_size(data: Path, size: tuple[int, int], seed: int) -> None:
    """The training frames must have the checkpoint's size: pruning and the Dice bound are measured
    at the size the model runs at, and the split must be the parent's."""
    from PIL import Image

    for sample in split_samples(find_samples(data), "train", data, seed=seed)[:8]:
        with Image.open(sample.image) as img:
            width, height = img.size
        if (height, width) != tuple(size):
            raise ConvSegError(f"data {data} holds {height}x{width} frames ({sample.image.name}), the checkpoint runs at "
                               f"{size[0]}x{size[1]}: slim on frames of the checkpoint's size (the data it was trained on)")


def check_inputs(checkpoint: Path, data: Path, opts: SlimOptions) -> dict[str, Any]:
    """Every bad input as a one-line error before any work; returns the checkpoint."""
    check_budget(opts.flops)
    if not 0.0 <= opts.max_dice_drop <= 1.0:
        raise ConvSegError(f"--max-dice-drop {opts.max_dice_drop} must lie in [0, 1] (a Dice difference)")
    require_modelopt()
    ckpt = read_checkpoint(checkpoint)
    check_not_below_budget(ckpt, checkpoint, opts.flops)
    check_data_size(data, tuple(ckpt["preprocess"]["size"]), opts.seed)
    return ckpt


def _train_config(parent: ConvSegNet, opts: SlimOptions) -> TrainConfig:
    return TrainConfig(encoder=parent.config.encoder, decoder_channels=parent.config.decoder_channels,
                       image_size=tuple(parent.preprocess.size), epochs=opts.epochs, batch_size=opts.batch_size,
                       lr=opts.lr, schedule="onecycle", device=opts.device, seed=opts.seed, threshold=parent.threshold,
                       augment=False)


def _dice_score(images: np.ndarray, masks: np.ndarray, batch_size: int) -> Callable[[torch.nn.Module], float]:
    from convseg_deploy.train import validate

    def score(model: torch.nn.Module) -> float:
        device = str(next(model.parameters()).device)
        return float(validate(model, images, masks, batch_size, device)[1]["dice"])

    return score


def prune_parent(parent: ConvSegNet, cfg: TrainConfig, data: Path, opts: SlimOptions, max_flops: float,
                 search_state: Path | None) -> ConvSegNet:
    """A pruned copy of ``parent`` (FastNAS, scored by Dice on ``opts.search_frames`` training frames)."""
    import copy

    from convseg_deploy.train import _load_split

    images, masks = _load_split(replace(cfg, max_train_images=opts.search_frames), data, "train")
    batches = [torch.from_numpy(preprocess(images[i:i + cfg.batch_size], parent.preprocess))
               for i in range(0, len(images), cfg.batch_size) if len(images[i:i + cfg.batch_size]) > 1]
    if not batches:
        raise ConvSegError(f"the training split of {data} has fewer than 2 frames: slim needs some to score its search")
    height, width = parent.preprocess.size
    student = copy.deepcopy(parent).cpu()
    torch.manual_seed(opts.seed)
    return prune_to_flops(student, max_flops, torch.zeros(1, 3, height, width), _dice_score(images, masks, cfg.batch_size),
                          batches, search_state, opts.channel_divisor, opts.ratio_step)


def slim(checkpoint: str | Path, data: str | Path, out: str | Path, opts: SlimOptions, resume: str | Path | None = None,
         progress: bool = True, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Prune ``checkpoint`` to ``opts.flops``, fine-tune, check the Dice bound; returns the slim record."""
    from convseg_deploy.train import _load_split, train, validate

    checkpoint, data, out = Path(checkpoint), Path(data), Path(out)
    ckpt = check_inputs(checkpoint, data, opts)
    parent = load_model(checkpoint)
    cfg = _train_config(parent, opts)
    height, width = parent.preprocess.size
    ensure_dir(out)
    parent_flops = model_flops(parent, height, width)
    unpruned_flops = _record(ckpt).get("flops_unpruned", parent_flops)
    if resume:
        student = load_model(resume)
        record = _record(read_checkpoint(resume))
        log(f"resuming the fine-tuning of {resume}")
    else:
        log(f"pruning {checkpoint} ({parent_flops / 1e9:.3f} GFLOP per {height}x{width} frame) to {opts.flops:.0%} of "
            f"{unpruned_flops / 1e9:.3f} GFLOP with ModelOpt FastNAS")
        student = prune_parent(parent, cfg, data, opts, opts.flops * unpruned_flops, out / SEARCH_STATE_NAME)
        record = {"parent": str(checkpoint), "parent_sha256": sha256_file(checkpoint), "budget": opts.flops,
                  "flops_unpruned": unpruned_flops, "flops_before": parent_flops,
                  "flops_after": model_flops(student, height, width), "params_before": count_parameters(parent),
                  "params_after": count_parameters(student), "distill": opts.distill}
        save_checkpoint(out / PRUNED_NAME, student, extra={SLIM_RECORD: record})
    if record["flops_after"] > opts.flops * unpruned_flops * (1 + 1e-6):
        raise ConvSegError(f"the pruned model costs {record['flops_after'] / unpruned_flops:.1%} of the unpruned FLOPs, "
                           f"over the budget {opts.flops}: try a smaller --channel-divisor")
    log(f"pruned: {record['flops_after'] / 1e9:.3f} GFLOP ({record['flops_after'] / unpruned_flops:.1%} of unpruned), "
        f"{record['params_after']:,} parameters (parent {record['params_before']:,})")

    val_x, val_y = _load_split(cfg, data, "val")
    parent_dice = float(validate(parent, val_x, val_y, cfg.batch_size, "cpu")[1]["dice"])
    record["parent_val_dice"] = parent_dice
    extra_loss = SoftTargets(parent, opts.distill_weight) if opts.distill else None
    best = train(cfg, data, out, resume=resume, progress=progress, log=log, model=student, extra_loss=extra_loss,
                 checkpoint_extra={SLIM_RECORD: record})
    dice = float(best.get("val_dice", float("nan")))
    record = {**record, "val_dice": dice, "dice_drop": parent_dice - dice}
    if not dice >= parent_dice - opts.max_dice_drop:
        missed = out / MISSED_NAME
        if (out / BEST_NAME).exists():
            os.replace(out / BEST_NAME, missed)
        raise ConvSegError(f"slimmed model's best validation Dice {dice:.4f} (epoch {best.get('epoch')}) lies "
                           f"{parent_dice - dice:.4f} below the parent's {parent_dice:.4f}, more than --max-dice-drop "
                           f"{opts.max_dice_drop}: kept as {missed}; give more --epochs or a larger --flops budget")
    return record

