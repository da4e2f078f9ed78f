"""Training with the reference recipe: Adam, BCE + Dice, ReduceLROnPlateau, early stopping.

Frames are decoded once at the model's size and kept in memory (polyp datasets are small),
augmented per batch with numpy, and preprocessed by the same function every backend uses.
Writes RUN_DIR/best.pt (by validation Dice), RUN_DIR/last.pt (with optimiser state for
--resume), RUN_DIR/log.jsonl (one JSON object per epoch) and RUN_DIR/config.json.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from convseg_deploy.augment import augment_pair, random_crop
from convseg_deploy.checkpoint import read_checkpoint, save_checkpoint
from convseg_deploy.config import ModelConfig, PreprocessSpec, TrainConfig, check_image_size
from convseg_deploy.data import find_samples, load_samples, split_samples
from convseg_deploy.errors import ConvSegError
from convseg_deploy.evaluate import iter_batches
from convseg_deploy.fsutil import ensure_dir, write_json
from convseg_deploy.imaging import logits_to_masks, preprocess
from convseg_deploy.losses import bce_dice_loss
from convseg_deploy.metrics import MetricAccumulator
from convseg_deploy.model import ConvSegNet, load_backbone_weights
from convseg_deploy.runtime.torch_runner import resolve_device


def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)


def _load_split(cfg: TrainConfig, data: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    samples = split_samples(find_samples(data), split, data, seed=cfg.seed,
                            fractions=(cfg.val_fraction, cfg.test_fraction))
    if split == "train" and cfg.max_train_images:
        samples = samples[: cfg.max_train_images]
    if not samples:
        raise ConvSegError(f"the {split} split of {data} is empty: add images or adjust the split files")
    images, masks = load_samples(samples, cfg.image_size)
    assert masks is not None  # find_samples required them
    return images, masks


def _batch_tensors(images: np.ndarray, masks: np.ndarray, spec: PreprocessSpec, device: str,
                   rng: np.random.Generator | None, augment: bool = False,
                   crop: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    if crop:
        images, masks = random_crop(images, masks, crop, rng)
        spec = replace(spec, size=(crop, crop))  # crops keep their pixel scale: no resize
    if augment:
        pairs = [augment_pair(img, m, rng) for img, m in zip(images, masks)]
        images = np.stack([p[0] for p in pairs])
        masks = np.stack([p[1] for p in pairs])
    x = torch.from_numpy(preprocess(images, spec)).to(device)
    y = torch.from_numpy(masks[:, None].astype(np.float32)).to(device)
    return x, y


PRECISE_BN_FRAMES = 128


@torch.no_grad()
def validate(model: ConvSegNet, images: np.ndarray, masks: np.ndarray, batch_size: int, device: str) -> tuple[float, dict[str, Any]]:
    """Validation loss and metrics on whole frames, from one forward pass per batch."""
    model.eval()
    losses, acc = [], MetricAccumulator()
    for sl in iter_batches(len(images), batch_size):
        x, y = _batch_tensors(images[sl], masks[sl], model.preprocess, device, None)
        logits = model(x)
        losses.append(float(bce_dice_loss(logits, y)) * len(x))
        acc.update(logits_to_masks(logits.float().cpu().numpy(), model.threshold), masks[sl])
    return sum(losses) / len(images), acc.result()


@torch.no_grad()
def recompute_bn_statistics(model: ConvSegNet, images: np.ndarray, batch_size: int, device: str) -> None:
    """Replace BatchNorm running statistics by exact averages over ``images`` ("precise BN").

    ConvSegNet ends in a BatchNorm on its single logit channel, whose running statistics lag far
    behind the quickly moving weights early in training; eval-mode logits are then shifted and
    validation Dice swings from epoch to epoch. Re-estimating the statistics with the final
    weights of the epoch fixes that for the cost of one forward pass over a few frames.
    """
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches below
    model.train()
    for sl in iter_batches(len(images), batch_size):
        if sl.stop - sl.start > 1:
            # at the frames' own size: whole frames, or crops when training used crops
            spec = replace(model.preprocess, size=tuple(images.shape[1:3]))
            model(torch.from_numpy(preprocess(images[sl], spec)).to(device))
    for m, momentum in zip(norms, saved):
        m.momentum = momentum
    model.eval()


def build_model(cfg: TrainConfig) -> ConvSegNet:
    check_image_size(*cfg.image_size)
    if cfg.crop_size is not None:
        check_image_size(cfg.crop_size, cfg.crop_size)
        if cfg.crop_size > min(cfg.image_size):
            raise ConvSegError(f"crop size {cfg.crop_size} is larger than the image size {cfg.image_size[0]}x{cfg.image_size[1]}: "
                               "use a smaller --crop-size or leave it out")
    model = ConvSegNet(ModelConfig(encoder=cfg.encoder, decoder_channels=cfg.decoder_channels), pretrained=cfg.pretrained,
                       preprocess=PreprocessSpec(size=tuple(cfg.image_size)), threshold=cfg.threshold)
    if cfg.backbone_weights:
        load_backbone_weights(model, cfg.backbone_weights)
    return model


def train(cfg: TrainConfig, data: str | Path, out: str | Path, resume: str | Path | None = None,
          progress: bool = True, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train, validate every epoch, checkpoint; returns the best validation metrics."""
    from tqdm import tqdm

    data, out = Path(data), ensure_dir(out)
    if cfg.epochs < 1 or cfg.batch_size < 1 or cfg.lr <= 0:
        raise ConvSegError(f"epochs and batch size must be >= 1 and lr > 0 (got {cfg.epochs}, {cfg.batch_size}, {cfg.lr})")
    _seed_everything(cfg.seed)
    device = resolve_device(cfg.device)
    train_x, train_y = _load_split(cfg, data, "train")
    val_x, val_y = _load_split(cfg, data, "val")
    log(f"data: {len(train_x)} train / {len(val_x)} val frames at {cfg.image_size[0]}x{cfg.image_size[1]} from {data}")

    model = build_model(cfg).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", patience=cfg.patience)
    use_amp = device.startswith("cuda")
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    start_epoch, best_dice, stale = 1, -1.0, 0
    if resume:
        ckpt = read_checkpoint(resume)
        try:
            model.load_state_dict(ckpt["state_dict"])
        except RuntimeError:  # torch's message lists every mismatched tensor over many lines
            raise ConvSegError(f"{resume} holds another architecture ({ckpt['model_config']}) than these options build "
                               f"({model.config.to_dict()}): resume with the run's own options (its config.json)") from None
        state = ckpt.get("extra", {}).get("train_state")
        if not state:
            raise ConvSegError(f"{resume} holds no training state: resume from a last.pt written by 'convseg-deploy train'")
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start_epoch, best_dice, stale = state["epoch"] + 1, state["best_dice"], state["stale"]
        if start_epoch > cfg.epochs or stale >= cfg.early_stop:  # nothing left to train: change nothing
            why = f"reached --epochs {cfg.epochs}" if start_epoch > cfg.epochs else f"stopped early ({stale} flat epochs)"
            raise ConvSegError(f"{resume} is a finished run: it {why} at epoch {state['epoch']}; nothing was changed "
                               "(raise --epochs to train further)")
        log(f"resuming {resume} at epoch {start_epoch}")
    write_json(out / "config.json", {**asdict(cfg), "image_size": list(cfg.image_size), "data": str(data), "device": device})

    rng = np.random.default_rng(cfg.seed + start_epoch)
    best: dict[str, Any] = {}
    log_path = out / "log.jsonl"
    for epoch in range(start_epoch, cfg.epochs + 1):
        model.train()
        t0, losses = time.perf_counter(), []
        order = rng.permutation(len(train_x))
        steps = list(iter_batches(len(order), cfg.batch_size))
        bar = tqdm(steps, desc=f"epoch {epoch}/{cfg.epochs}", disable=not progress, leave=False, unit="batch")
        for sl in bar:
            idx = order[sl]
            if len(idx) < 2:  # BatchNorm cannot train on a single frame
                continue
            x, y = _batch_tensors(train_x[idx], train_y[idx], model.preprocess, device, rng, cfg.augment, cfg.crop_size)
            with torch.autocast("cuda", dtype=torch.float16, enabled=use_amp):
                loss = bce_dice_loss(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            losses.append(loss.item())
            bar.set_postfix(loss=f"{np.mean(losses):.4f}")
        bn_frames = train_x[order[:PRECISE_BN_FRAMES]]
        if cfg.crop_size:  # statistics of what training saw, at the cost of crops
            bn_frames = random_crop(bn_frames, train_y[order[:PRECISE_BN_FRAMES]], cfg.crop_size, rng)[0]
        recompute_bn_statistics(model, bn_frames, cfg.batch_size, device)
        val_loss, metrics = validate(model, val_x, val_y, cfg.batch_size, device)
        scheduler.step(val_loss)
        train_loss = float(np.mean(losses)) if losses else math.nan
        row = {"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss, "lr": optimizer.param_groups[0]["lr"],
               "seconds": round(time.perf_counter() - t0, 2), **{f"val_{k}": v for k, v in metrics.items()}}
        with open(log_path, "a") as fh:
            fh.write(json.dumps(row) + "\n")
        improved = metrics["dice"] > best_dice
        if improved:
            best_dice, stale, best = float(metrics["dice"]), 0, row
            save_checkpoint(out / "best.pt", model, epoch=epoch, metrics=metrics)
        else:
            stale += 1
        train_state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                       "epoch": epoch, "best_dice": best_dice, "stale": stale}
        save_checkpoint(out / "last.pt", model, epoch=epoch, metrics=metrics, extra={"train_state": train_state})
        log(f"epoch {epoch}: loss {train_loss:.4f}  val loss {val_loss:.4f}  val dice {metrics['dice']:.4f}  "
            f"iou {metrics['iou']:.4f}  ({row['seconds']:.0f}s){'  *best' if improved else ''}")
        if stale >= cfg.early_stop:
            log(f"early stop: no validation improvement for {stale} epochs")
            break
    return best
