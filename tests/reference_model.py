"""An independent re-implementation of the authors' reference ConvSegNet (AOige/ConvSegNet, model.py).

Written from the architecture's description, not copied: it exists only so that the tests can
produce state_dicts with the reference's key names and compare ``load_model``'s outputs with the
reference forward pass, layer for layer. Module and attribute names must match the reference
exactly, since they become the state_dict keys (``encoder.layer0.0.weight``, ``c1.d4.conv.1.running_var``,
``s0.conv.0.weight``, ``output.conv.0.weight``, ...).
"""

from __future__ import annotations

import torch
import torchvision
from torch import nn


class Conv2D(nn.Module):
    """Conv (no bias) + BatchNorm inside ``self.conv``; ReLU applied afterwards only when ``act``."""

    def __init__(self, in_c: int, out_c: int, kernel_size: int = 3, padding: int = 1, act: bool = True) -> None:
        super().__init__()
        self.act = act
        self.conv = nn.Sequential(
            nn.Conv2d(in_c, out_c, kernel_size=kernel_size, padding=padding, bias=False),
            nn.BatchNorm2d(out_c),
        )
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        return self.relu(x) if self.act else x


class context_feature_refinement(nn.Module):  # the reference's class name
    """Four parallel Conv2D branches (kernels 1, 3, 7, 11), concatenated, fused by a 1x1 Conv2D."""

    def __init__(self, in_c: int, out_c: int) -> None:
        super().__init__()
        self.d1 = Conv2D(in_c, out_c, kernel_size=1, padding=0)
        self.d2 = Conv2D(in_c, out_c, kernel_size=3, padding=1)
        self.d3 = Conv2D(in_c, out_c, kernel_size=7, padding=3)
        self.d4 = Conv2D(in_c, out_c, kernel_size=11, padding=5)
        self.c1 = Conv2D(out_c * 4, out_c, kernel_size=1, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c1(torch.cat([self.d1(x), self.d2(x), self.d3(x), self.d4(x)], dim=1))


class encoder(nn.Module):  # the reference's class name
    """torchvision ResNet-50 up to layer3; each level reduced to ``ch`` channels by a 3x3 Conv2D."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        backbone = torchvision.models.resnet50(weights=None)  # a local: not part of the state_dict
        self.layer0 = nn.Sequential(backbone.conv1, backbone.bn1, backbone.relu)
        self.layer1 = nn.Sequential(backbone.maxpool, backbone.layer1)
        self.layer2 = backbone.layer2
        self.layer3 = backbone.layer3
        self.c1 = Conv2D(64, ch)
        self.c2 = Conv2D(256, ch)
        self.c3 = Conv2D(512, ch)
        self.c4 = Conv2D(1024, ch)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        x1 = self.layer0(x)
        x2 = self.layer1(x1)
        x3 = self.layer2(x2)
        x4 = self.layer3(x3)
        return self.c1(x1), self.c2(x2), self.c3(x3), self.c4(x4)


class ConvSegNet(nn.Module):
    """The reference network; note that its ``output`` Conv2D keeps the default ReLU."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = encoder(64)
        self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)
        self.c1 = context_feature_refinement(128, 64)
        self.c2 = context_feature_refinement(128, 64)
        self.c3 = context_feature_refinement(128, 64)
        self.c4 = context_feature_refinement(128, 64)
        self.s0 = Conv2D(3, 64)
        self.output = Conv2D(64, 1, kernel_size=1, padding=0)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        s1, s2, s3, s4 = self.encoder(image)
        x = self.c1(torch.cat([self.up(s4), s3], dim=1))
        x = self.c2(torch.cat([self.up(x), s2], dim=1))
        x = self.c3(torch.cat([self.up(x), s1], dim=1))
        x = self.c4(torch.cat([self.up(x), self.s0(image)], dim=1))
        return self.output(x)


def randomize_batchnorm(model: nn.Module, generator: torch.Generator, size: int = 32) -> None:
    """Give every BatchNorm random affine parameters and random running statistics (none is identity).

    The statistics are first measured on random images (so activations keep a sane scale through
    fifty layers, and the final ReLU sees both signs), then perturbed at random.
    """
    batchnorms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    with torch.no_grad():
        for bn in batchnorms:
            bn.weight.copy_(torch.empty(bn.num_features).uniform_(0.5, 1.5, generator=generator))
            bn.bias.copy_(torch.randn(bn.num_features, generator=generator) * 0.2)
            bn.reset_running_stats()
            bn.momentum = None  # cumulative average over the calibration batches
        model.train()
        model(torch.randn(4, 3, size, size, generator=generator))
        model.eval()
        for bn in batchnorms:
            n = bn.num_features
            bn.momentum = 0.1
            bn.running_mean.add_(torch.randn(n, generator=generator) * 0.2 * bn.running_var.sqrt())
            bn.running_var.mul_(torch.empty(n).uniform_(0.7, 1.4, generator=generator))


def build_reference(seed: int = 0) -> ConvSegNet:
    """A reference ConvSegNet with random weights and random BN statistics, in eval mode."""
    torch.manual_seed(seed)
    model = ConvSegNet()
    randomize_batchnorm(model, torch.Generator().manual_seed(seed + 1))
    return model.eval()
