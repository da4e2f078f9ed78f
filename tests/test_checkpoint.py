"""Own checkpoints: round trip, atomic saving, and one-line errors naming the file for bad ones."""

from __future__ import annotations

from pathlib import Path
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

from convseg_deploy import ConvSegError, load_model
from convseg_deploy.checkpoint import CHECKPOINT_FORMAT, read_checkpoint, save_checkpoint
from convseg_deploy.config import ModelConfig, PreprocessSpec
from convseg_deploy.model import ConvSegNet


def tiny_model(seed: int = 0) -> ConvSegNet:
    """A small ConvSegNet whose BN statistics are not the defaults, so they must round-trip too."""
    torch.manual_seed(seed)
    spec = PreprocessSpec(size=(64, 64), channel_order="BGR", scale=1 / 255, mean=(0.1, 0.2, 0.3), std=(0.5, 0.6, 0.7))
    model = ConvSegNet(ModelConfig(encoder="resnet18", decoder_channels=16), preprocess=spec, threshold=0.3)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return model.eval()


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> tuple[ConvSegNet, Path]:
    model = tiny_model()
    path = save_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt", model, epoch=7,
                           metrics={"dice": 0.75, "images": 5}, extra={"note": "x"})
    return model, path


def assert_one_line_error_naming(path: Path, loader: Callable[[], Any]) -> str:
    with pytest.raises(ConvSegError) as err:
        loader()
    message = str(err.value)
    assert str(path) in message, message
    assert "\n" not in message
    return message


def test_saved_checkpoint_round_trips(saved: tuple[ConvSegNet, Path]) -> None:
    model, path = saved
    loaded = load_model(path)
    assert not loaded.training
    assert loaded.config == model.config
    assert loaded.preprocess == model.preprocess
    assert loaded.threshold == pytest.approx(0.3)
    expected = model.state_dict()
    got = loaded.state_dict()
    assert got.keys() == expected.keys()
    assert all(torch.equal(got[k], expected[k]) for k in expected)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_checkpoint_holds_its_metadata_and_loads_with_the_safe_loader(saved: tuple[ConvSegNet, Path]) -> None:
    _, path = saved
    raw = torch.load(path, map_location="cpu", weights_only=True)  # no pickled objects inside
    assert raw["format"] == CHECKPOINT_FORMAT
    ckpt = read_checkpoint(path)
    assert ckpt["epoch"] == 7
    assert ckpt["metrics"] == {"dice": 0.75, "images": 5}
    assert ckpt["extra"] == {"note": "x"}
    assert ckpt["model_config"] == {"encoder": "resnet18", "decoder_channels": 16, "output_activation": "none"}
    assert ckpt["preprocess"]["channel_order"] == "BGR" and ckpt["preprocess"]["size"] == [64, 64]
    assert {"torch", "numpy", "convseg_deploy"} <= ckpt["versions"].keys()


class _Boom(RuntimeError):
    pass


def _failing_save(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
    Path(f).write_bytes(b"PK\x03\x04 half a checkpoint")  # something is written, then it fails
    raise _Boom("disk full")


def test_failed_save_leaves_nothing_under_the_final_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = tiny_model()
    monkeypatch.setattr(torch, "save", _failing_save)
    final = tmp_path / "best.pt"
    with pytest.raises(_Boom):
        save_checkpoint(final, model)
    assert not final.exists()
    assert list(tmp_path.iterdir()) == []  # no temporary file left behind


def test_failed_save_keeps_the_previous_checkpoint(saved: tuple[ConvSegNet, Path], tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    model, good = saved
    final = tmp_path / "last.pt"
    final.write_bytes(good.read_bytes())
    monkeypatch.setattr(torch, "save", _failing_save)
    with pytest.raises(_Boom):
        save_checkpoint(final, model, epoch=8)
    monkeypatch.undo()
    assert final.read_bytes() == good.read_bytes()
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]
    assert read_checkpoint(final)["epoch"] == 7


def test_text_file_is_not_a_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "notes.pt"
    path.write_text("these are not weights\n")
    assert_one_line_error_naming(path, lambda: load_model(path))


def test_empty_file_is_not_a_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "empty.pt"
    path.write_bytes(b"")
    assert_one_line_error_naming(path, lambda: load_model(path))


def test_truncated_checkpoint(saved: tuple[ConvSegNet, Path], tmp_path: Path) -> None:
    _, good = saved
    path = tmp_path / "truncated.pt"
    data = good.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    message = assert_one_line_error_naming(path, lambda: load_model(path))
    assert "truncated" in message


def test_pickled_module_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "module.pt"
    torch.save(nn.Linear(2, 2), path)  # a whole pickled object, not weights
    assert_one_line_error_naming(path, lambda: load_model(path))


def test_random_state_dict_is_not_a_convsegnet(tmp_path: Path) -> None:
    path = tmp_path / "other.pth"
    torch.save({"fc.weight": torch.randn(3, 4), "fc.bias": torch.randn(3)}, path)
    assert_one_line_error_naming(path, lambda: load_model(path))


def test_checkpoint_of_another_encoder_than_its_config_says(saved: tuple[ConvSegNet, Path], tmp_path: Path) -> None:
    _, good = saved
    payload = torch.load(good, weights_only=True)
    payload["model_config"]["encoder"] = "resnet50"  # the weights are a resnet18 ConvSegNet's
    path = tmp_path / "mislabelled.pt"
    torch.save(payload, path)
    message = assert_one_line_error_naming(path, lambda: load_model(path))
    assert "resnet50" in message


def test_checkpoint_with_other_decoder_width(tmp_path: Path) -> None:
    torch.manual_seed(0)
    wide = ConvSegNet(ModelConfig(encoder="resnet18", decoder_channels=8))
    payload = {"format": CHECKPOINT_FORMAT, "model_config": ModelConfig(encoder="resnet18", decoder_channels=16).to_dict(),
               "preprocess": PreprocessSpec().to_dict(), "threshold": 0.5, "state_dict": wide.state_dict()}
    path = tmp_path / "width.pt"
    torch.save(payload, path)
    message = assert_one_line_error_naming(path, lambda: load_model(path))
    assert "shape" in message


def test_checkpoint_with_missing_keys(saved: tuple[ConvSegNet, Path], tmp_path: Path) -> None:
    _, good = saved
    payload = torch.load(good, weights_only=True)
    del payload["state_dict"]["decoder.2.branches.3.0.weight"]
    path = tmp_path / "missing.pt"
    torch.save(payload, path)
    message = assert_one_line_error_naming(path, lambda: load_model(path))
    assert "missing" in message and "decoder.2.branches.3.0.weight" in message


def test_checkpoint_without_weights(saved: tuple[ConvSegNet, Path], tmp_path: Path) -> None:
    _, good = saved
    payload = torch.load(good, weights_only=True)
    del payload["state_dict"]
    path = tmp_path / "noweights.pt"
    torch.save(payload, path)
    assert_one_line_error_naming(path, lambda: load_model(path))


def test_missing_file_and_folder(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.pt"
    assert_one_line_error_naming(missing, lambda: load_model(missing))
    assert_one_line_error_naming(tmp_path, lambda: load_model(tmp_path))
