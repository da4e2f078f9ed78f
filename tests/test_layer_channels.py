"""Per-layer channels of a slimmed model: recorded by save_checkpoint, rebuilt by load_model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from convseg_deploy import ConvSegError, load_model
from convseg_deploy.checkpoint import read_checkpoint, save_checkpoint
from convseg_deploy.config import ModelConfig, PreprocessSpec
from convseg_deploy.layer_channels import apply_layer_channels, layer_channels
from convseg_deploy.model import ConvSegNet

TINY = ModelConfig(encoder="resnet18", decoder_channels=16)
# One CFR branch of the full-resolution stage narrowed from 16 to 8 channels, and the fuse after it.
NARROW = {"decoder.3.branches.0.0": [8, 32], "decoder.3.branches.0.1": [8], "decoder.3.fuse.0": [16, 56]}


def _narrowed() -> ConvSegNet:
    torch.manual_seed(0)
    model = ConvSegNet(TINY, preprocess=PreprocessSpec(size=(64, 64)))
    apply_layer_channels(model, NARROW)
    return model.eval()


def test_a_narrowed_model_round_trips_through_an_ordinary_checkpoint(tmp_path: Path) -> None:
    model = _narrowed()
    assert layer_channels(model, TINY) == NARROW
    save_checkpoint(tmp_path / "m.pt", model)
    assert read_checkpoint(tmp_path / "m.pt")["layer_channels"] == NARROW
    loaded = load_model(tmp_path / "m.pt")
    image = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded(image), model(image))


def test_an_unpruned_checkpoint_records_no_layer_channels(tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "m.pt", ConvSegNet(TINY, preprocess=PreprocessSpec(size=(64, 64))))
    assert "layer_channels" not in read_checkpoint(tmp_path / "m.pt")


@pytest.mark.parametrize("bad", [{"decoder.9.fuse.0": [8, 8]}, {"decoder.3.fuse.0": [8]}, {"head.1": [0]}])
def test_channels_for_layers_the_architecture_lacks_are_refused_naming_the_layer(bad: dict) -> None:
    model = ConvSegNet(TINY)
    with pytest.raises(ConvSegError, match=f"for layer '{next(iter(bad))}'"):
        apply_layer_channels(model, bad, "checkpoint x.pt")
