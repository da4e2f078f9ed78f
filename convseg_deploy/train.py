"""Training with the reference recipe: Adam, BCE + Dice, ReduceLROnPlateau, early stopping
(or, with ``schedule: onecycle``, a warm-up and a cosine decay over the whole run instead).

Frames are decoded once at the model's size and kept in memory (polyp datasets are small),
augmented per batch with numpy, and preprocessed by the same function every backend uses.
Writes RUN_DIR/best.pt (by validation Dice), RUN_DIR/last.pt (with optimiser state for
--resume), RUN_DIR/log.jsonl (one JSON object per epoch) and RUN_DIR/config.json.

Under torchrun (see convseg_deploy.distributed) every process trains on its shard of each
epoch with the model in DistributedDataParallel; ``batch_size`` is per process. All ranks
validate a share of the frames and score the gathered per-image counts, so every rank takes
the same LR, early-stopping and best-checkpoint decisions; rank 0 alone logs and writes.
"""

from __future__ import annotations

import json
import math
import time
from itertools import chain
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch

from convseg_deploy.augment import augment_pair, random_crop
from convseg_deploy.checkpoint import read_checkpoint, save_checkpoint
from convseg_deploy.config import ModelConfig, PreprocessSpec, TrainConfig, check_image_size
from convseg_deploy.data import find_samples, load_samples, split_samples
from convseg_deploy.distributed import (DEFAULT_TIMEOUT_S, DistContext, all_gather, barrier, check_same_options,
                                        check_world_size, collectives, epoch_shard, init_distributed, prepare_model,
                                        shutdown, sum_over_ranks, sync_bn_buffers)
from convseg_deploy.errors import ConvSegError
from convseg_deploy.batching import iter_batches
from convseg_deploy.fsutil import ensure_dir, write_json
from convseg_deploy.imaging import logits_to_masks, preprocess
from convseg_deploy.losses import bce_dice_loss
from convseg_deploy.metrics import MetricAccumulator, confusion
from convseg_deploy.model import ConvSegNet, load_backbone_weights


ExtraLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""(input batch, student logits) -> a loss term added to the usual one (slim's distillation)."""


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
SINGLE_PROCESS = DistContext()


@torch.no_grad()
def validate(model: ConvSegNet, images: np.ndarray, masks: np.ndarray, batch_size: int, device: str,
             ctx: DistContext = SINGLE_PROCESS) -> tuple[float, dict[str, Any]]:
    """Validation loss and metrics on whole frames, from one forward pass per batch.

    In a distributed run each rank takes every world_size-th frame; the per-image counts of all
    ranks are scored in frame order, so the metrics are exactly a single process's (a mean of
    per-rank means would weigh ranks, not images). The loss is summed over ranks.
    """
    model.eval()
    mine = np.arange(ctx.rank, len(images), ctx.world_size)
    losses, counts = [], []
    for sl in iter_batches(len(mine), batch_size):
        idx = mine[sl]
        x, y = _batch_tensors(images[idx], masks[idx], model.preprocess, device, None)
        logits = model(x)
        losses.append(float(bce_dice_loss(logits, y)) * len(x))
        preds = logits_to_masks(logits.float().cpu().numpy(), model.threshold)
        counts += [(int(i), confusion(pred, target)) for i, pred, target in zip(idx, preds, masks[idx])]
    acc = MetricAccumulator()
    for _, image_counts in sorted(chain.from_iterable(all_gather(ctx, counts)), key=lambda item: item[0]):
        acc.add(image_counts)
    return sum_over_ranks(ctx, [sum(losses)])[0] / len(images), acc.result()


@torch.no_grad()
def recalibrate_batchnorm(model: torch.nn.Module, batches: Iterable[torch.Tensor]) -> None:
    """Replace every BatchNorm's running statistics by exact averages over ``batches`` (left in eval mode).

    The same re-estimation Model Optimizer's FastNAS applies to each candidate it scores, so a
    parent calibrated here and its candidates share one reference.
    """
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches below
    model.train()
    for batch in batches:
        model(batch)
    for m, momentum in zip(norms, saved):
        m.momentum = momentum
    model.eval()


def recompute_bn_statistics(model: ConvSegNet, images: np.ndarray, batch_size: int, device: str) -> None:
    """Replace BatchNorm running statistics by exact averages over ``images`` ("precise BN").

    ConvSegNet ends in a BatchNorm on its single logit channel, whose running statistics lag far
    behind the quickly moving weights early in training; eval-mode logits are then shifted and
    validation Dice swings from epoch to epoch. Re-estimating the statistics with the final
    weights of the epoch fixes that for the cost of one forward pass over a few frames.
    """
    # at the frames' own size: whole frames, or crops when training used crops
    spec = replace(model.preprocess, size=tuple(images.shape[1:3]))
    recalibrate_batchnorm(model, (torch.from_numpy(preprocess(images[sl], spec)).to(device)
                                  for sl in iter_batches(len(images), batch_size) if sl.stop - sl.start > 1))


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


def optimizer_steps_per_epoch(frames: int, batch_size: int) -> int:
    """Optimiser steps one epoch of ``frames`` makes: batches of a single frame are skipped (BatchNorm)."""
    return sum(1 for sl in iter_batches(frames, batch_size) if sl.stop - sl.start >= 2)


def make_scheduler(cfg: TrainConfig, optimizer: torch.optim.Optimizer, steps_per_epoch: int) -> Any:
    """The LR schedule of ``cfg.schedule``: ReduceLROnPlateau (stepped once per epoch on the
    validation loss) or OneCycleLR (stepped after every optimiser step, ending at lr / final_div)."""
    if cfg.schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", patience=cfg.patience)
    # div_factor 10: the warm-up starts at lr / 10; final_div_factor is relative to that start.
    # One step more than the run takes: OneCycleLR reaches its minimum at total_steps - 1, so the
    # LR after the last step (the one the log shows) is lr / final_div, not past the cosine's end.
    return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.lr, total_steps=cfg.epochs * steps_per_epoch + 1,
                                               pct_start=cfg.warmup_fraction, anneal_strategy="cos", div_factor=10.0,
                                               final_div_factor=cfg.final_div / 10.0, cycle_momentum=False)


def _quiet(_message: str) -> None:
    """The log of ranks other than 0: they train silently."""


def train(cfg: TrainConfig, data: str | Path, out: str | Path, resume: str | Path | None = None,
          progress: bool = True, log: Callable[[str], None] = print,
          dist_timeout_s: float = DEFAULT_TIMEOUT_S, model: ConvSegNet | None = None,
          extra_loss: ExtraLoss | None = None, checkpoint_extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train, validate every epoch, checkpoint; returns the best validation metrics.

    Started by torchrun, it joins the other processes (``dist_timeout_s`` bounds every wait
    for them); otherwise it is one process on ``cfg.device``. Fine-tuning (``slim``) passes the
    ``model`` to start from instead of the one ``cfg`` builds, an ``extra_loss`` added to the
    usual one (distillation) and ``checkpoint_extra`` recorded in best.pt and last.pt.
    """
    data, out = Path(data), Path(out)
    ctx = init_distributed(cfg.device, dist_timeout_s)
    try:
        if ctx.is_main:
            ensure_dir(out)
        return _train(cfg, data, out, resume, progress and ctx.is_main, log if ctx.is_main else _quiet, ctx,
                      model, extra_loss, dict(checkpoint_extra or {}))
    except ConvSegError as exc:
        if ctx.enabled and not str(exc).startswith("rank "):
            raise ConvSegError(f"{ctx.name}: {exc}") from None
        raise
    finally:
        shutdown(ctx)


def _load_data(cfg: TrainConfig, data: Path, ctx: DistContext) -> tuple[np.ndarray, ...]:
    train_x, train_y = _load_split(cfg, data, "train")
    val_x, val_y = _load_split(cfg, data, "val")
    check_world_size(len(train_x), cfg.batch_size, ctx.world_size)
    with collectives(ctx, "comparing the options of all processes"):
        check_same_options(ctx, {**asdict(cfg), "image_size": list(cfg.image_size), "device": None,
                                 "train_frames": len(train_x), "val_frames": len(val_x)})
    return train_x, train_y, val_x, val_y


def _train(cfg: TrainConfig, data: Path, out: Path, resume: str | Path | None, progress: bool,
           log: Callable[[str], None], ctx: DistContext, initial: ConvSegNet | None = None,
           extra_loss: ExtraLoss | None = None, checkpoint_extra: dict[str, Any] | None = None) -> dict[str, Any]:
    from tqdm import tqdm

    if cfg.epochs < 1 or cfg.batch_size < 1 or cfg.lr <= 0:
        raise ConvSegError(f"epochs and batch size must be >= 1 and lr > 0 (got {cfg.epochs}, {cfg.batch_size}, {cfg.lr})")
    _seed_everything(cfg.seed)
    device = ctx.device
    train_x, train_y, val_x, val_y = _load_data(cfg, data, ctx)
    log(f"data: {len(train_x)} train / {len(val_x)} val frames at {cfg.image_size[0]}x{cfg.image_size[1]} from {data}")
    if ctx.enabled:
        log(f"distributed: {ctx.world_size} processes ({ctx.backend}) x batch {cfg.batch_size} = global batch "
            f"{ctx.world_size * cfg.batch_size}{', synchronised BatchNorm' if cfg.sync_bn else ''}")

    model = (initial if initial is not None else build_model(cfg)).to(device)
    start_epoch, best_dice, stale, train_state = 1, -1.0, 0, None
    if resume:
        ckpt = read_checkpoint(resume)
        try:
            model.load_state_dict(ckpt["state_dict"])
        except RuntimeError:  # torch's message lists every mismatched tensor over many lines
            raise ConvSegError(f"{resume} holds another architecture ({ckpt['model_config']}) than these options build "
                               f"({model.config.to_dict()}): resume with the run's own options (its config.json)") from None
        train_state = ckpt.get("extra", {}).get("train_state")
        if not train_state:
            raise ConvSegError(f"{resume} holds no training state: resume from a last.pt written by 'convseg-deploy train'")
    net = prepare_model(model, ctx, cfg.sync_bn)  # DDP (and SyncBN) in a distributed run: new BN parameters
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    shard = len(epoch_shard(len(train_x), 1, cfg.seed, ctx)) if ctx.enabled else len(train_x)
    scheduler = make_scheduler(cfg, optimizer, optimizer_steps_per_epoch(shard, cfg.batch_size))
    per_step = cfg.schedule != "plateau"
    use_amp = device.startswith("cuda")
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    if train_state:
        if train_state.get("schedule", "plateau") != cfg.schedule:
            raise ConvSegError(f"{resume} was trained with schedule {train_state.get('schedule', 'plateau')!r}, these options "
                               f"ask for {cfg.schedule!r}: resume with the run's own options (its config.json)")
        saved_steps = train_state["scheduler"].get("total_steps")
        if per_step and saved_steps != scheduler.total_steps:  # the cycle is laid out over the whole run
            raise ConvSegError(f"{resume} follows a one-cycle schedule over {saved_steps} steps, these options make "
                               f"{scheduler.total_steps}: resume with the run's own --epochs and frames (its config.json)")
        optimizer.load_state_dict(train_state["optimizer"])
        scheduler.load_state_dict(train_state["scheduler"])
        start_epoch, best_dice, stale = train_state["epoch"] + 1, train_state["best_dice"], train_state["stale"]
        if start_epoch > cfg.epochs or stale >= cfg.early_stop:  # nothing left to train: change nothing
            why = f"reached --epochs {cfg.epochs}" if start_epoch > cfg.epochs else f"stopped early ({stale} flat epochs)"
            raise ConvSegError(f"{resume} is a finished run: it {why} at epoch {train_state['epoch']}; nothing was changed "
                               "(raise --epochs to train further)")
        log(f"resuming {resume} at epoch {start_epoch}")
        if train_state.get("world_size", 1) != ctx.world_size:
            log(f"note: {resume} was trained by {train_state.get('world_size', 1)} processes, this run has "
                f"{ctx.world_size}: the global batch changes from here on")
    if ctx.is_main:
        write_json(out / "config.json", {**asdict(cfg), "image_size": list(cfg.image_size), "data": str(data),
                                         "device": device, "world_size": ctx.world_size,
                                         "global_batch": cfg.batch_size * ctx.world_size})

    # Augmentation draws differ per rank; a single process keeps the seed it always had.
    rng = np.random.default_rng(cfg.seed + start_epoch if not ctx.enabled else [cfg.seed + start_epoch, ctx.rank])
    best: dict[str, Any] = {}
    log_path = out / "log.jsonl"
    for epoch in range(start_epoch, cfg.epochs + 1):
        net.train()
        t0, losses = time.perf_counter(), []
        order = epoch_shard(len(train_x), epoch, cfg.seed, ctx) if ctx.enabled else rng.permutation(len(train_x))
        steps = list(iter_batches(len(order), cfg.batch_size))
        bar = tqdm(steps, desc=f"epoch {epoch}/{cfg.epochs}", disable=not progress, leave=False, unit="batch")
        with collectives(ctx, f"training epoch {epoch}"):
            for sl in bar:
                idx = order[sl]
                if len(idx) < 2:  # BatchNorm cannot train on a single frame (equal shards: every rank skips it)
                    continue
                x, y = _batch_tensors(train_x[idx], train_y[idx], model.preprocess, device, rng, cfg.augment, cfg.crop_size)
                with torch.autocast("cuda", dtype=torch.float16, enabled=use_amp):
                    logits = net(x)
                    loss = bce_dice_loss(logits, y)
                    if extra_loss is not None:
                        loss = loss + extra_loss(x, logits)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                if per_step:
                    scheduler.step()
                losses.append(loss.item())
                bar.set_postfix(loss=f"{np.mean(losses):.4f}")
        with collectives(ctx, f"validating epoch {epoch}"):
            # precise BN over PRECISE_BN_FRAMES frames in all, each rank on its share
            bn_order = order[:-(-PRECISE_BN_FRAMES // ctx.world_size)]
            bn_frames = train_x[bn_order]
            if cfg.crop_size:  # statistics of what training saw, at the cost of crops
                bn_frames = random_crop(bn_frames, train_y[bn_order], cfg.crop_size, rng)[0]
            recompute_bn_statistics(model, bn_frames, cfg.batch_size, device)
            sync_bn_buffers(ctx, model, averaged=not cfg.sync_bn)
            val_loss, metrics = validate(model, val_x, val_y, cfg.batch_size, device, ctx)
            shards = all_gather(ctx, order.tolist()) if ctx.enabled else []
            loss_sum, loss_steps = sum_over_ranks(ctx, [sum(losses), len(losses)]) if ctx.enabled else (0.0, 0)
        if not per_step:
            scheduler.step(val_loss)
        if ctx.enabled:
            train_loss = loss_sum / loss_steps if loss_steps else math.nan
        else:
            train_loss = float(np.mean(losses)) if losses else math.nan
        row = {"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss, "lr": optimizer.param_groups[0]["lr"],
               "seconds": round(time.perf_counter() - t0, 2), **{f"val_{k}": v for k, v in metrics.items()}}
        if ctx.enabled:  # what each rank trained on: shards must be disjoint
            row.update(world_size=ctx.world_size, rank_frames=[len(s) for s in shards],
                       distinct_frames=len(set(chain.from_iterable(shards))))
        improved = metrics["dice"] > best_dice
        if improved:
            best_dice, stale, best = float(metrics["dice"]), 0, row
        else:
            stale += 1
        if ctx.is_main:
            with open(log_path, "a") as fh:
                fh.write(json.dumps(row) + "\n")
            if improved:
                save_checkpoint(out / "best.pt", model, epoch=epoch, metrics=metrics, extra=checkpoint_extra)
            state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                     "epoch": epoch, "best_dice": best_dice, "stale": stale, "world_size": ctx.world_size,
                     "schedule": cfg.schedule}
            save_checkpoint(out / "last.pt", model, epoch=epoch, metrics=metrics,
                            extra={**(checkpoint_extra or {}), "train_state": state})
        log(f"epoch {epoch}: loss {train_loss:.4f}  val loss {val_loss:.4f}  val dice {metrics['dice']:.4f}  "
            f"iou {metrics['iou']:.4f}  ({row['seconds']:.0f}s){'  *best' if improved else ''}")
        if stale >= cfg.early_stop:
            log(f"early stop: no validation improvement for {stale} epochs")
            break
    with collectives(ctx, "waiting for rank 0 to write the last checkpoint"):
        barrier(ctx)
    return best
