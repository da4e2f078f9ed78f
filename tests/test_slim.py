"""`slim`: ModelOpt FastNAS pruning to a FLOPs budget, fine-tuning with distillation, the Dice bound.

On the session's tiny trained model (resnet18, 16 decoder channels, 64x64). The search is kept
cheap (4 scoring frames, widths in quarters, channels in multiples of 4); later runs reuse the
first run's ModelOpt search state (its sensitivity map), as a repeated `slim` in one folder does.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from convseg_deploy import ConvSegError, load_model
from convseg_deploy.checkpoint import read_checkpoint
from convseg_deploy.cli import main
from convseg_deploy.fsutil import sha256_file
from convseg_deploy.imaging import preprocess
from convseg_deploy.prune import model_flops, searchable_channels

pytest.importorskip("modelopt.torch.prune")

BUDGET = 0.5
CHEAP = dict(search_frames=4, channel_divisor=4, ratio_step=0.25, batch_size=8, device="cpu", seed=42)


def _opts(**kw):
    from convseg_deploy.slim import SlimOptions

    return SlimOptions(**{"flops": BUDGET, "epochs": 2, "max_dice_drop": 1.0, **CHEAP, **kw})


def _quiet(_msg: str) -> None:
    pass


@pytest.fixture(scope="module")
def slimmed_run(trained_checkpoint: Path, synth_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from convseg_deploy.slim import slim

    out = tmp_path_factory.mktemp("slim") / "run"
    slim(trained_checkpoint, synth_data, out, _opts(), progress=False, log=_quiet)
    return out


def _reusing_search(slimmed_run: Path, out: Path) -> Path:
    """A new run folder that starts from ``slimmed_run``'s ModelOpt search state."""
    from convseg_deploy.slim import SEARCH_STATE_NAME

    out.mkdir(parents=True)
    shutil.copy(slimmed_run / SEARCH_STATE_NAME, out / SEARCH_STATE_NAME)
    return out


def test_the_search_space_covers_the_decoders_cfr_channels(trained_checkpoint: Path) -> None:
    names = searchable_channels(load_model(trained_checkpoint), channel_divisor=4)
    decoder = [n for n in names if n.startswith("decoder.")]
    assert len(decoder) >= 8, names  # every CFR stage: its branches' inputs and its fuse
    assert {f"decoder.{i}.fuse.0.in_channels" for i in range(4)} <= set(names)
    assert len(names) > len(decoder) >= 8  # the encoder too


def test_slimmed_checkpoint_loads_within_budget_records_its_parent_and_exports(
        slimmed_run: Path, trained_checkpoint: Path, synth_data: Path, tmp_path: Path) -> None:
    from convseg_deploy.exporters.pipeline import export_artifacts

    parent, slimmed = load_model(trained_checkpoint), load_model(slimmed_run / "best.pt")
    ckpt = read_checkpoint(slimmed_run / "best.pt")
    narrowed = ckpt["layer_channels"]
    assert any(name.startswith("decoder.") for name in narrowed), narrowed
    record = ckpt["extra"]["slim"]
    assert record["parent_sha256"] == sha256_file(trained_checkpoint) and record["budget"] == BUDGET
    flops = model_flops(slimmed, 64, 64)
    assert flops == pytest.approx(record["flops_after"])
    assert flops <= BUDGET * model_flops(parent, 64, 64) == pytest.approx(BUDGET * record["flops_before"])
    assert record["params_after"] < record["params_before"] == sum(p.numel() for p in parent.parameters())
    # same interface: state_dict keys, input and output shapes
    assert list(slimmed.state_dict()) == list(parent.state_dict())
    with torch.no_grad():
        assert slimmed(torch.zeros(2, 3, 64, 64)).shape == (2, 1, 64, 64)
    # the export's own checks (fp32: relative error and mask agreement >= 0.999 with PyTorch) raise on a miss
    export_artifacts(slimmed_run / "best.pt", tmp_path / "export", ("fp32",), calib_data=synth_data,
                     calib_count=8, verify_count=8, log=_quiet)
    assert (tmp_path / "export" / "model.fp32.onnx").is_file()


def _probabilities(model: torch.nn.Module, images: np.ndarray) -> torch.Tensor:
    with torch.no_grad():
        return torch.sigmoid(model.eval()(torch.from_numpy(preprocess(images, model.preprocess))))


def test_distillation_brings_the_student_closer_to_the_parent_than_plain_fine_tuning(
        slimmed_run: Path, trained_checkpoint: Path, synth_data: Path, tmp_path: Path) -> None:
    """Same pruned start, seed, frames and steps; only the soft-target term differs."""
    from convseg_deploy.slim import PRUNED_NAME, SoftTargets, _train_config
    from convseg_deploy.train import _load_split, train

    parent = load_model(trained_checkpoint)
    cfg = _train_config(parent, _opts(epochs=2))
    val_x, _ = _load_split(cfg, synth_data, "val")
    target = _probabilities(parent, val_x)
    gaps = {}
    for distill in (False, True):
        student = load_model(slimmed_run / PRUNED_NAME)
        extra = SoftTargets(load_model(trained_checkpoint), 1.0) if distill else None
        out = tmp_path / f"distill-{distill}"
        train(cfg, synth_data, out, progress=False, log=_quiet, model=student, extra_loss=extra)
        gaps[distill] = float((_probabilities(load_model(out / "last.pt"), val_x) - target).abs().mean())
    assert gaps[True] < 0.9 * gaps[False], gaps


def test_a_missed_dice_bound_is_an_error_that_keeps_the_best_under_its_missed_name(
        slimmed_run: Path, trained_checkpoint: Path, synth_data: Path, tmp_path: Path) -> None:
    from convseg_deploy.slim import slim

    out = _reusing_search(slimmed_run, tmp_path / "run")
    # a fifth of the FLOPs, a bound of 0 and a learning rate too small to recover anything in one epoch
    with pytest.raises(ConvSegError, match=r"best validation Dice 0\.\d{4} .* below the parent's .*missed-best\.pt"):
        slim(trained_checkpoint, synth_data, out, _opts(flops=0.2, epochs=1, max_dice_drop=0.0, lr=1e-9),
             progress=False, log=_quiet)
    assert not (out / "best.pt").exists()
    assert read_checkpoint(out / "missed-best.pt")["extra"]["slim"]["budget"] == 0.2
    load_model(out / "missed-best.pt")


def _cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["slim", *args])
    return result.exit_code, result.output


@pytest.mark.parametrize("budget", ["0", "1", "1.5", "-0.2"])
def test_a_budget_outside_0_1_is_refused_before_any_work(budget: str, trained_checkpoint: Path, synth_data: Path,
                                                         tmp_path: Path) -> None:
    code, output = _cli("--checkpoint", str(trained_checkpoint), "--data", str(synth_data), "--out", str(tmp_path / "r"),
                        "--flops", budget)
    assert code == 1 and f"--flops {float(budget)} is not a budget" in output and "between 0 and 1" in output
    assert "Traceback" not in output and not (tmp_path / "r").exists()


def test_a_checkpoint_already_slimmed_below_the_budget_is_refused(slimmed_run: Path, synth_data: Path,
                                                                 tmp_path: Path) -> None:
    code, output = _cli("--checkpoint", str(slimmed_run / "best.pt"), "--data", str(synth_data),
                        "--out", str(tmp_path / "r"), "--flops", "0.6")
    assert code == 1 and "is already slimmed to" in output and "--flops 0.6" in output, output
    assert output.count("\n") == 1 and not (tmp_path / "r").exists()


def test_data_of_another_image_size_is_refused(trained_checkpoint: Path, tmp_path: Path) -> None:
    from convseg_deploy.synth import generate_dataset

    other = generate_dataset(tmp_path / "data32", count=12, size=32, seed=1)
    code, output = _cli("--checkpoint", str(trained_checkpoint), "--data", str(other), "--out", str(tmp_path / "r"),
                        "--flops", "0.5")
    assert code == 1 and "holds 32x32 frames" in output and "runs at 64x64" in output, output
    assert not (tmp_path / "r").exists()


def test_the_commands_defaults_are_slim_options_defaults() -> None:
    """The CLI cannot import slim (torch) to read its defaults: this keeps the two the same fact."""
    import dataclasses

    from convseg_deploy.slim import SlimOptions

    fields = {f.name: f.default for f in dataclasses.fields(SlimOptions) if f.default is not dataclasses.MISSING}
    shared = [p for p in main.commands["slim"].params if p.name in fields]
    assert len(shared) >= 8
    for param in shared:
        assert param.default == fields[param.name], param.name


def test_missing_model_optimizer_names_the_extra_before_any_work(monkeypatch: pytest.MonkeyPatch,
                                                                 trained_checkpoint: Path, synth_data: Path,
                                                                 tmp_path: Path) -> None:
    monkeypatch.setitem(__import__("sys").modules, "modelopt.torch.prune", None)  # import raises ImportError
    code, output = _cli("--checkpoint", str(trained_checkpoint), "--data", str(synth_data), "--out", str(tmp_path / "r"),
                        "--flops", "0.5")
    assert code == 1 and "Model Optimizer" in output and 'pip install "convseg-deploy[train,export]"' in output, output
    assert not (tmp_path / "r").exists()
