"""ConvSegNet's architecture, and loading the authors' reference checkpoints layer for layer.

The reference network is re-implemented independently in ``tests/reference_model.py``; its
random state_dict (random BN statistics too) is saved with ``torch.save`` exactly as the
reference code saves checkpoints, then loaded with ``load_model``.
"""

from __future__ import annotations

from pathlib import Path
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

from convseg_deploy import ConvSegError, load_model
from convseg_deploy.config import REFERENCE_PREPROCESS, ModelConfig, PreprocessSpec, check_image_size
from convseg_deploy.model import ContextFeatureRefinement, ConvSegNet, count_parameters
from tests.reference_model import ConvSegNet as ReferenceConvSegNet
from tests.reference_model import build_reference

PAPER_PARAMETERS = 15_581_122
RESNET50_LEVELS = (64, 256, 512, 1024)
TOLERANCE = 1e-4


def rel_err(ours: torch.Tensor, ref: torch.Tensor) -> float:
    """Largest absolute difference relative to the reference's largest magnitude."""
    assert ours.shape == ref.shape
    scale = ref.abs().max()
    assert scale > 0, "a compared activation is all zeros: the comparison would prove nothing"
    return float((ours - ref).abs().max() / scale)


def _conv_bn_relu(block: nn.Module, in_ch: int, out_ch: int, kernel: int, relu: bool = True) -> None:
    layers = list(block.children())
    assert len(layers) == (3 if relu else 2)
    conv, bn = layers[0], layers[1]
    assert isinstance(conv, nn.Conv2d) and conv.bias is None
    assert (conv.in_channels, conv.out_channels, conv.kernel_size) == (in_ch, out_ch, (kernel, kernel))
    assert conv.padding == (kernel // 2, kernel // 2) and conv.stride == (1, 1)
    assert isinstance(bn, nn.BatchNorm2d) and bn.num_features == out_ch
    if relu:
        assert isinstance(layers[2], nn.ReLU)


# ---------------------------------------------------------------------------- our architecture


@pytest.fixture(scope="module")
def default_model() -> ConvSegNet:
    return ConvSegNet().eval()


def test_default_resnet50_model_has_the_papers_parameter_count(default_model: ConvSegNet) -> None:
    assert default_model.config == ModelConfig(encoder="resnet50", decoder_channels=64, output_activation="none")
    assert count_parameters(default_model) == PAPER_PARAMETERS


def test_default_model_layers_follow_the_paper(default_model: ConvSegNet) -> None:
    m = default_model
    assert tuple(m.encoder.feature_info.reduction()) == (2, 4, 8, 16)
    assert tuple(m.encoder.feature_info.channels()) == RESNET50_LEVELS
    assert len(m.reduce) == 4
    for block, ch in zip(m.reduce, RESNET50_LEVELS):
        _conv_bn_relu(block, ch, 64, 3)
    _conv_bn_relu(m.stem_skip, 3, 64, 3)
    assert len(m.decoder) == 4
    for stage in m.decoder:
        assert isinstance(stage, ContextFeatureRefinement)
        assert [b[0].kernel_size[0] for b in stage.branches] == [1, 3, 7, 11]
        for branch, k in zip(stage.branches, (1, 3, 7, 11)):
            _conv_bn_relu(branch, 128, 64, k)
        _conv_bn_relu(stage.fuse, 256, 64, 1)
    _conv_bn_relu(m.head, 64, 1, 1, relu=False)  # logits: no activation by default


def test_input_sizes_that_are_not_multiples_of_16_are_refused_with_the_sizes_that_work(
        default_model: ConvSegNet) -> None:
    with pytest.raises(ConvSegError) as err:
        default_model(torch.zeros(1, 3, 70, 64))
    message = str(err.value)
    assert "70x64" in message and "16" in message
    assert "64" in message.replace("70x64", "") and "80" in message  # the neighbouring sizes that work
    with pytest.raises(ConvSegError, match="48x100"):
        check_image_size(48, 100)
    with pytest.raises(ConvSegError):
        PreprocessSpec(size=(250, 256))
    assert check_image_size(48, 96) == (48, 96)


def test_output_activation_is_validated() -> None:
    with pytest.raises(ConvSegError, match="output_activation"):
        ModelConfig(output_activation="sigmoid")


def test_unknown_encoder_is_a_user_error() -> None:
    with pytest.raises(ConvSegError, match="no_such_encoder"):
        ConvSegNet(ModelConfig(encoder="no_such_encoder"))


def test_load_model_returns_an_eval_model_with_its_preprocessing(trained_checkpoint: Path) -> None:
    model = load_model(trained_checkpoint)
    assert isinstance(model, nn.Module)
    assert not model.training and not any(m.training for m in model.modules())
    assert isinstance(model.preprocess, PreprocessSpec) and model.preprocess.size == (64, 64)
    assert model.threshold == pytest.approx(0.5)
    with torch.inference_mode():
        assert model(torch.randn(2, 3, 64, 64)).shape == (2, 1, 64, 64)
        assert model(torch.randn(1, 3, 48, 96)).shape == (1, 1, 48, 96)  # non-square multiples of 16


# ---------------------------------------------------------------------------- reference checkpoints


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[ReferenceConvSegNet, Path]:
    """The reference model with random weights and BN statistics, saved as the reference code saves it."""
    model = build_reference(seed=0)
    path = tmp_path_factory.mktemp("reference") / "ConvSegNet_reference.pth"
    torch.save(model.state_dict(), path)
    return model, path


@pytest.fixture(scope="module")
def imported(reference: tuple[ReferenceConvSegNet, Path]) -> ConvSegNet:
    return load_model(reference[1])


def _capture(modules: dict[str, nn.Module]) -> tuple[dict[str, Any], Callable[[], None]]:
    """Record each module's forward output (cloned: the ReLUs work in place) under its name."""
    seen: dict[str, Any] = {}
    handles = []
    for name, module in modules.items():
        def hook(_m: nn.Module, _inp: Any, out: Any, name: str = name) -> None:
            seen[name] = [t.detach().clone() for t in out] if isinstance(out, (list, tuple)) else out.detach().clone()
        handles.append(module.register_forward_hook(hook))
    return seen, lambda: [h.remove() for h in handles]


def test_reference_reimplementation_matches_the_papers_parameter_count(
        reference: tuple[ReferenceConvSegNet, Path]) -> None:
    model, path = reference
    assert count_parameters(model) == PAPER_PARAMETERS
    keys = torch.load(path, weights_only=True).keys()
    for key in ("encoder.layer0.0.weight", "encoder.c1.conv.0.weight", "c1.d4.conv.1.running_var",
                "s0.conv.0.weight", "output.conv.0.weight", "encoder.layer1.1.0.conv1.weight"):
        assert key in keys


def test_reference_checkpoint_reproduces_the_reference_outputs_layer_for_layer(
        reference: tuple[ReferenceConvSegNet, Path], imported: ConvSegNet) -> None:
    ref, _ = reference
    ours = imported
    ref_seen, ref_done = _capture({
        **{f"enc{i}": getattr(ref.encoder, f"layer{i}") for i in range(4)},
        **{f"reduce{i}": getattr(ref.encoder, f"c{i + 1}") for i in range(4)},
        **{f"cfr{i}": getattr(ref, f"c{i + 1}") for i in range(4)},
        "stem": ref.s0, "out": ref.output,
    })
    our_seen, our_done = _capture({
        "enc": ours.encoder,
        **{f"reduce{i}": ours.reduce[i] for i in range(4)},
        **{f"cfr{i}": ours.decoder[i] for i in range(4)},
        "stem": ours.stem_skip, "out": ours.head,
    })
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(7))
    try:
        with torch.no_grad():
            y_ref = ref(x)
            y_ours = ours(x)
    finally:
        ref_done()
        our_done()

    assert y_ours.shape == y_ref.shape == (2, 1, 64, 64)
    assert rel_err(y_ours, y_ref) <= TOLERANCE
    assert torch.allclose(our_seen["out"], y_ours)
    # The reference output keeps its ReLU: the imported model must clip too, and the inputs must
    # exercise both sides of it (otherwise a missing ReLU would go unnoticed).
    assert (y_ref == 0).float().mean() > 0.05 and (y_ref > 0).float().mean() > 0.05
    assert (y_ours >= 0).all() and torch.equal(y_ours == 0, y_ref == 0)

    for i in range(4):
        assert rel_err(our_seen["enc"][i], ref_seen[f"enc{i}"]) <= TOLERANCE, f"encoder level {i}"
        assert rel_err(our_seen[f"reduce{i}"], ref_seen[f"reduce{i}"]) <= TOLERANCE, f"encoder.c{i + 1}"
        assert rel_err(our_seen[f"cfr{i}"], ref_seen[f"cfr{i}"]) <= TOLERANCE, f"CFR stage c{i + 1}"
    assert [t.shape[-1] for t in our_seen["enc"]] == [32, 16, 8, 4]
    assert [our_seen[f"cfr{i}"].shape[-1] for i in range(4)] == [8, 16, 32, 64]
    assert rel_err(our_seen["stem"], ref_seen["stem"]) <= TOLERANCE
    assert rel_err(our_seen["out"], ref_seen["out"]) <= TOLERANCE


def test_reference_checkpoint_carries_the_reference_preprocessing(imported: ConvSegNet) -> None:
    spec = imported.preprocess
    assert spec == REFERENCE_PREPROCESS
    assert spec.size == (256, 256) and spec.channel_order == "BGR"
    assert spec.scale == pytest.approx(1 / 255)
    assert tuple(spec.mean) == (0.0, 0.0, 0.0) and tuple(spec.std) == (1.0, 1.0, 1.0)
    assert imported.config.output_activation == "relu" and imported.config.encoder == "resnet50"
    assert isinstance(list(imported.head.children())[-1], nn.ReLU)
    assert not imported.training


def test_dataparallel_prefixed_reference_state_dict_loads(
        reference: tuple[ReferenceConvSegNet, Path], imported: ConvSegNet, tmp_path: Path) -> None:
    ref, _ = reference
    path = tmp_path / "dataparallel.pth"
    torch.save({f"module.{k}": v for k, v in ref.state_dict().items()}, path)
    model = load_model(path)
    expected = imported.state_dict()
    loaded = model.state_dict()
    assert loaded.keys() == expected.keys()
    assert all(torch.equal(loaded[k], expected[k]) for k in expected)


def test_reference_state_dict_with_a_missing_key_is_refused_naming_the_file(
        reference: tuple[ReferenceConvSegNet, Path], tmp_path: Path) -> None:
    ref, _ = reference
    state = ref.state_dict()
    del state["c2.d3.conv.1.running_var"]
    path = tmp_path / "incomplete.pth"
    torch.save(state, path)
    with pytest.raises(ConvSegError) as err:
        load_model(path)
    message = str(err.value)
    assert str(path) in message and "\n" not in message
    assert "missing" in message


def _forward_before_issue24(model: ConvSegNet, image: torch.Tensor) -> torch.Tensor:
    """The forward as it was before it became traceable (a copy, to prove the outputs did not change)."""
    def up(x: torch.Tensor) -> torch.Tensor:
        return nn.functional.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=True)

    feats = [reduce(f) for reduce, f in zip(model.reduce, model.encoder(image))]
    skips = [model.stem_skip(image), *feats[:3]]
    x = feats[3]
    for stage, skip in zip(model.decoder, reversed(skips)):
        x = stage(torch.cat([up(x), skip], dim=1))
    return model.head(x)


def test_forward_traces_with_torch_fx_from_input_to_logits_with_identical_outputs() -> None:
    torch.manual_seed(0)
    model = ConvSegNet(ModelConfig(encoder="resnet18", decoder_channels=16)).eval()
    image = torch.randn(2, 3, 64, 64)
    graph = torch.fx.symbolic_trace(model)
    called = {node.target for node in graph.graph.nodes if node.op == "call_module"}
    # every CFR branch and the head are in the graph: nothing is left to an untraced leaf
    assert {f"decoder.{i}.branches.{b}.0" for i in range(4) for b in range(4)} <= called
    assert {"head.0", "stem_skip.0", "reduce.3.0", "encoder.layer3.1.conv2"} <= called
    with torch.no_grad():
        expected = _forward_before_issue24(model, image)
        assert torch.equal(model(image), expected)
        assert torch.equal(graph(image), expected)
    assert list(graph.state_dict()) == list(model.state_dict())


def test_state_dict_keys_are_those_of_the_reference_layout(default_model: ConvSegNet) -> None:
    keys = set(default_model.state_dict())
    assert {"reduce.0.0.weight", "decoder.3.branches.3.0.weight", "decoder.0.fuse.1.running_mean", "head.0.weight"} <= keys
    assert not any(k.startswith(("reduce.reduce", "decoder.stages")) for k in keys)
