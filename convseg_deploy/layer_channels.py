"""Per-layer channel counts of a slimmed (channel-pruned) ConvSegNet.

A pruned model has the same modules and state_dict keys as the architecture its ModelConfig
builds, only narrower convolutions and BatchNorms. A checkpoint records the layers that differ
(conv: [out, in]; BatchNorm: [features]) and ``apply_layer_channels`` narrows a freshly built
model to them before the weights load, so export, bench, bundle, Triton and live take a slimmed
checkpoint like any other.
"""

from __future__ import annotations

import torch
from torch import nn

from convseg_deploy.config import ModelConfig
from convseg_deploy.errors import ConvSegError

# Only these layer types are narrowed by channel pruning (ModelOpt's FastNAS on ConvSegNet).
PRUNABLE = (nn.Conv2d, nn.BatchNorm2d)


def _channels(module: nn.Module) -> list[int]:
    if isinstance(module, nn.Conv2d):
        return [module.out_channels, module.in_channels]
    return [module.num_features]


def unpruned_layer_channels(config: ModelConfig) -> dict[str, list[int]]:
    """Every prunable layer's channels in the architecture ``config`` builds (on the meta device: no weights)."""
    from convseg_deploy.model import ConvSegNet

    with torch.device("meta"):
        model = ConvSegNet(config)
    return {name: _channels(m) for name, m in model.named_modules() if isinstance(m, PRUNABLE)}


def layer_channels(model: nn.Module, config: ModelConfig) -> dict[str, list[int]]:
    """The layers of ``model`` whose channels differ from ``config``'s architecture (empty: not pruned)."""
    full = unpruned_layer_channels(config)
    return {name: _channels(m) for name, m in model.named_modules()
            if isinstance(m, PRUNABLE) and name in full and _channels(m) != full[name]}


def _narrowed(module: nn.Module, channels: list[int]) -> nn.Module:
    if isinstance(module, nn.Conv2d):
        out_ch, in_ch = channels
        if module.groups != 1:
            raise ConvSegError(f"grouped convolutions cannot be narrowed (groups={module.groups})")
        return nn.Conv2d(in_ch, out_ch, module.kernel_size, stride=module.stride, padding=module.padding,
                         dilation=module.dilation, bias=module.bias is not None, padding_mode=module.padding_mode)
    (features,) = channels
    return nn.BatchNorm2d(features, eps=module.eps, momentum=module.momentum, affine=module.affine,
                          track_running_stats=module.track_running_stats)


def apply_layer_channels(model: nn.Module, channels: dict[str, list[int]], source: str = "checkpoint") -> None:
    """Replace every layer named in ``channels`` by one of those channels (fresh weights: load them next)."""
    modules = dict(model.named_modules())
    for name, counts in channels.items():
        module = modules.get(name)
        expected = 2 if isinstance(module, nn.Conv2d) else 1
        if not isinstance(module, PRUNABLE) or len(counts) != expected or not all(
                isinstance(c, int) and c > 0 for c in counts):
            raise ConvSegError(f"{source} records channels {counts!r} for layer {name!r}, which this architecture has no "
                               "such Conv2d/BatchNorm2d for: was it written by another version of 'convseg-deploy slim'?")
        parent_name, _, child = name.rpartition(".")
        setattr(modules[parent_name] if parent_name else model, child, _narrowed(module, list(counts)))
