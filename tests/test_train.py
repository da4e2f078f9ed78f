"""Training: the run folder of the session's short training, learning progress, resuming, and
augmentations that keep frames and masks aligned."""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import fields
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import torch

from convseg_deploy import ConvSegError, load_model
from convseg_deploy.augment import augment_pair, random_crop
from convseg_deploy.checkpoint import read_checkpoint
from convseg_deploy.config import TrainConfig
from convseg_deploy.data import find_samples, load_samples, split_samples
from convseg_deploy.evaluate import evaluate_runner
from convseg_deploy.runtime.torch_runner import TorchRunner
from convseg_deploy.train import build_model, train


def read_log(run: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if line.strip()]


def run_config(run: Path, **changes: Any) -> TrainConfig:
    """The TrainConfig a run folder was trained with (from its config.json)."""
    saved = json.loads((run / "config.json").read_text())
    values = {f.name: saved[f.name] for f in fields(TrainConfig) if f.name in saved}
    values["image_size"] = tuple(values["image_size"])
    values.update(changes)
    return TrainConfig(**values)


def test_run_folder_has_a_log_row_per_epoch_and_loadable_checkpoints(trained_run: Path) -> None:
    cfg = run_config(trained_run)
    rows = read_log(trained_run)
    assert [r["epoch"] for r in rows] == list(range(1, cfg.epochs + 1))
    for row in rows:
        assert 0.0 <= row["val_dice"] <= 1.0
        assert math.isfinite(row["train_loss"]) and math.isfinite(row["val_loss"])
        assert row["val_images"] == 8
    best_row = max(rows, key=lambda r: r["val_dice"])
    best, last = read_checkpoint(trained_run / "best.pt"), read_checkpoint(trained_run / "last.pt")
    assert best["epoch"] == best_row["epoch"]
    assert best["metrics"]["dice"] == pytest.approx(best_row["val_dice"])
    assert last["epoch"] == cfg.epochs
    assert last["extra"]["train_state"]["epoch"] == cfg.epochs
    for name in ("best.pt", "last.pt"):
        model = load_model(trained_run / name)
        assert model.config.encoder == "resnet18" and model.config.decoder_channels == 16
        assert model.preprocess.size == (64, 64) and not model.training
    assert not list(trained_run.glob(".*.tmp"))  # atomic saves left no temporaries


def test_training_improves_validation_dice_over_the_untrained_model(trained_run: Path, synth_data: Path) -> None:
    cfg = run_config(trained_run)
    samples = split_samples(find_samples(synth_data), "val", synth_data, seed=cfg.seed,
                            fractions=(cfg.val_fraction, cfg.test_fraction))
    images, masks = load_samples(samples, cfg.image_size)
    assert masks is not None and masks.any()  # there are polyps to find
    torch.manual_seed(cfg.seed)  # the same initial weights as training's epoch 0
    untrained = build_model(cfg).eval()
    with TorchRunner(model=untrained) as runner:
        before = evaluate_runner(runner, images, masks)
    with TorchRunner(trained_run / "best.pt") as runner:
        after = evaluate_runner(runner, images, masks)
    best_logged = max(r["val_dice"] for r in read_log(trained_run))
    assert after["images"] == before["images"] == len(samples) == 8
    assert after["dice"] == pytest.approx(best_logged, abs=1e-6)  # the logged score is reproducible
    # Judge on the frames that show a polyp: on empty frames a model that predicts nothing (as
    # the untrained head, biased towards background, does) already scores 1.
    polyp = masks.reshape(len(masks), -1).any(1)
    assert polyp.sum() >= 4
    with TorchRunner(model=untrained) as runner:
        before_polyp = evaluate_runner(runner, images[polyp], masks[polyp])
    with TorchRunner(trained_run / "best.pt") as runner:
        after_polyp = evaluate_runner(runner, images[polyp], masks[polyp])
    assert after_polyp["dice"] > before_polyp["dice"] + 0.1, (
        f"validation Dice on frames with polyps {after_polyp['dice']:.4f} does not beat the untrained model's "
        f"{before_polyp['dice']:.4f} by 0.1")


def test_resume_continues_the_epoch_numbering(trained_run: Path, synth_data: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)  # the session's run folder stays untouched
    cfg = run_config(run)
    before = read_checkpoint(run / "last.pt")
    # One more epoch; only a few training frames, to keep it quick (resuming does not depend on it).
    more = run_config(run, epochs=cfg.epochs + 1, max_train_images=4)
    messages: list[str] = []
    train(more, synth_data, run, resume=run / "last.pt", progress=False, log=messages.append)
    rows = read_log(run)
    assert [r["epoch"] for r in rows] == list(range(1, cfg.epochs + 2))
    assert any(f"epoch {cfg.epochs + 1}" in m for m in messages)
    last = read_checkpoint(run / "last.pt")
    assert last["epoch"] == cfg.epochs + 1
    assert last["extra"]["train_state"]["epoch"] == cfg.epochs + 1
    # the optimiser state carried over: Adam's step count grew by the one new step
    def steps(ckpt: dict[str, Any]) -> int:
        return max(int(s["step"]) for s in ckpt["extra"]["train_state"]["optimizer"]["state"].values())

    assert steps(last) == steps(before) + 1
    # training went on from the saved weights, it did not start over
    changed = [k for k, v in last["state_dict"].items() if not torch.equal(v, before["state_dict"][k])]
    assert changed
    assert last["extra"]["train_state"]["best_dice"] >= before["extra"]["train_state"]["best_dice"]


def test_resume_from_a_checkpoint_without_training_state(trained_run: Path, synth_data: Path, tmp_path: Path) -> None:
    cfg = run_config(trained_run, epochs=5, max_train_images=2)
    with pytest.raises(ConvSegError, match="best.pt"):
        train(cfg, synth_data, tmp_path / "run", resume=trained_run / "best.pt", progress=False, log=lambda _m: None)


def test_resume_with_another_architecture_is_a_user_error(trained_run: Path, synth_data: Path, tmp_path: Path) -> None:
    cfg = run_config(trained_run, epochs=5, decoder_channels=8, max_train_images=2)  # the run used 16
    with pytest.raises(ConvSegError) as err:
        train(cfg, synth_data, tmp_path / "run", resume=trained_run / "last.pt", progress=False, log=lambda _m: None)
    assert str(trained_run / "last.pt") in str(err.value) and "\n" not in str(err.value)


def test_crop_training_keeps_the_frame_size_and_validates_on_whole_frames(synth_data: Path, tmp_path: Path) -> None:
    cfg = TrainConfig(encoder="resnet18", decoder_channels=8, image_size=(64, 64), crop_size=32, epochs=1, batch_size=4,
                      max_train_images=8, device="cpu", augment=False)
    train(cfg, synth_data, tmp_path / "run", progress=False, log=lambda _m: None)
    model = load_model(tmp_path / "run" / "best.pt")
    assert model.preprocess.size == (64, 64)  # deployed at the frame size, not the crop size
    assert read_log(tmp_path / "run")[0]["val_images"] == 8


@pytest.mark.parametrize("crop", [80, 40])
def test_bad_crop_size_is_a_user_error(crop: int, synth_data: Path, tmp_path: Path) -> None:
    cfg = TrainConfig(encoder="resnet18", decoder_channels=8, image_size=(64, 64), crop_size=crop, epochs=1, device="cpu")
    with pytest.raises(ConvSegError, match=str(crop)):
        train(cfg, synth_data, tmp_path / "run", progress=False, log=lambda _m: None)
    assert not (tmp_path / "run" / "best.pt").exists()


# ---------------------------------------------------------------------------- augmentations


def test_random_crop_cuts_frame_and_mask_at_the_same_place() -> None:
    image, mask = _red_shapes_frame(2)
    images, masks = np.stack([image] * 6), np.stack([mask] * 6)
    crops, crop_masks = random_crop(images, masks, 32, np.random.default_rng(0))
    assert crops.shape == (6, 32, 32, 3) and crop_masks.shape == (6, 32, 32)
    for crop, crop_mask in zip(crops, crop_masks):
        np.testing.assert_array_equal(crop_mask, crop[:, :, 0] > 127)
    assert len({c.tobytes() for c in crops}) > 1  # different places per frame


def _red_shapes_frame(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """An RGB frame whose red channel is 255 exactly on an asymmetric shape (the mask), 0 elsewhere;
    green and blue are noise that never reaches 0, so dropout holes are recognisable."""
    rng = np.random.default_rng(seed)
    h, w = 64, 64
    red = np.zeros((h, w), np.uint8)
    cv2.rectangle(red, (6, 4), (30, 18), 255, -1)  # top-left block
    cv2.circle(red, (44, 44), 11, 255, -1)  # bottom-right disc
    cv2.rectangle(red, (50, 6), (58, 28), 255, -1)  # a bar on the right
    image = np.dstack([red, rng.integers(30, 220, (h, w)), rng.integers(30, 220, (h, w))]).astype(np.uint8)
    return image, red > 127


def test_augmentations_keep_image_and_mask_aligned() -> None:
    image, mask = _red_shapes_frame(0)
    changed = 0
    for seed in range(40):
        aug_img, aug_mask = augment_pair(image, mask, np.random.default_rng(seed))
        assert aug_img.shape == image.shape and aug_img.dtype == np.uint8
        assert aug_mask.shape == mask.shape and aug_mask.dtype == bool
        assert aug_img.flags["C_CONTIGUOUS"] and aug_mask.flags["C_CONTIGUOUS"]
        hole = (aug_img == 0).all(axis=2)  # coarse dropout: the image is hidden, the mask is not
        # the mask must still be what the image's own red channel says (bilinear vs nearest
        # interpolation may differ on the shapes' rims only)
        disagree = (aug_mask != (aug_img[:, :, 0] > 127)) & ~hole
        assert disagree.mean() < 0.02, (seed, disagree.mean())
        # the mask moves only geometrically (dropout hides image patches, not polyps): the same
        # draws applied to the inverted mask give exactly the inverted result
        _, aug_inverse = augment_pair(image, ~mask, np.random.default_rng(seed))
        np.testing.assert_array_equal(aug_inverse, ~aug_mask)
        changed += not np.array_equal(aug_mask, mask)
    assert changed >= 30  # flips and rotations happened in most draws


def test_augmentation_is_reproducible_from_the_generator() -> None:
    image, mask = _red_shapes_frame(1)
    a = augment_pair(image, mask, np.random.default_rng(5))
    b = augment_pair(image, mask, np.random.default_rng(5))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert image[:, :, 0].max() == 255 and mask.any()  # the inputs were not modified in place
    np.testing.assert_array_equal(_red_shapes_frame(1)[0], image)


def test_onecycle_warms_up_then_decays_to_lr_over_final_div() -> None:
    from convseg_deploy.train import make_scheduler, optimizer_steps_per_epoch

    cfg = TrainConfig(lr=0.002, epochs=4, schedule="onecycle", warmup_fraction=0.25, final_div=100.0)
    assert optimizer_steps_per_epoch(17, 8) == 2  # the last batch of one frame is skipped (BatchNorm)
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.Adam([param], lr=cfg.lr)
    scheduler = make_scheduler(cfg, optimizer, steps_per_epoch=10)
    lrs = [optimizer.param_groups[0]["lr"]]
    for _ in range(40):
        optimizer.step()
        scheduler.step()
        lrs.append(optimizer.param_groups[0]["lr"])
    peak = lrs.index(max(lrs))
    assert lrs[0] == pytest.approx(cfg.lr / 10) and peak in (9, 10) and lrs[peak] == pytest.approx(cfg.lr, rel=1e-2)
    assert all(a < b for a, b in zip(lrs[:peak], lrs[1:peak + 1]))  # warm-up: rising
    assert all(a > b for a, b in zip(lrs[peak:], lrs[peak + 1:]))  # then falling, every step
    assert lrs[-1] == pytest.approx(cfg.lr / cfg.final_div, rel=1e-6)
    plateau = make_scheduler(TrainConfig(lr=0.002), optimizer, steps_per_epoch=10)
    assert isinstance(plateau, torch.optim.lr_scheduler.ReduceLROnPlateau)


def test_onecycle_training_logs_its_lr_and_refuses_to_resume_another_schedule(synth_data: Path, tmp_path: Path) -> None:
    cfg = TrainConfig(encoder="resnet18", decoder_channels=8, image_size=(64, 64), epochs=2, batch_size=4,
                      max_train_images=8, device="cpu", augment=False, lr=0.002, schedule="onecycle", final_div=50.0)
    train(cfg, synth_data, tmp_path / "run", progress=False, log=lambda _m: None)
    rows = read_log(tmp_path / "run")
    assert [r["epoch"] for r in rows] == [1, 2] and rows[-1]["lr"] == pytest.approx(cfg.lr / cfg.final_div, rel=1e-6)
    more = TrainConfig(**{**cfg.__dict__, "epochs": 3, "schedule": "plateau"})
    with pytest.raises(ConvSegError, match="trained with schedule 'onecycle', these options ask for 'plateau'"):
        train(more, synth_data, tmp_path / "run", resume=tmp_path / "run" / "last.pt", progress=False, log=lambda _m: None)
    longer = TrainConfig(**{**cfg.__dict__, "epochs": 3})  # the cycle was laid out over 2 epochs
    with pytest.raises(ConvSegError, match="one-cycle schedule over 5 steps, these options make 7"):
        train(longer, synth_data, tmp_path / "run", resume=tmp_path / "run" / "last.pt", progress=False, log=lambda _m: None)


@pytest.mark.parametrize(("changes", "message"), [({"schedule": "cosine"}, "schedule must be one of plateau, onecycle"),
                                                  ({"warmup_fraction": 1.0}, "warmup_fraction must be between 0 and 1"),
                                                  ({"final_div": 0.5}, "final_div at least 1")])
def test_bad_schedule_options_are_one_line_errors(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ConvSegError, match=message):
        TrainConfig(**changes)
