"""ConvSegNet: a timm encoder, four Context Feature Refinement (CFR) decoder stages, a 1x1 head.

Follows the paper (IEEE Access 11:16142, 2023) and the authors' reference code layer for layer:
encoder levels at strides 2/4/8/16 reduced to ``decoder_channels`` by 3x3 conv-BN-ReLU; each
decoder stage upsamples x2 (bilinear, align_corners=True), concatenates the next finer skip and
refines with a CFR block; the finest skip is a 3x3 conv-BN-ReLU of the image itself.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from convseg_deploy.config import DEFAULT_THRESHOLD, ModelConfig, PreprocessSpec, check_image_size
from convseg_deploy.errors import ConvSegError

ENCODER_STRIDES = (2, 4, 8, 16)
CFR_KERNELS = (1, 3, 7, 11)
# The head's BatchNorm normalises the single logit channel to unit variance per batch, so with
# the default gain (1) logits stay within a few units and training needs many epochs to become
# confident. A larger initial gain starts the head where it ends up anyway (measured on the
# synthetic set: validation loss after one epoch 1.05 instead of 1.34); the architecture is
# unchanged.
HEAD_INIT_GAIN = 4.0
HEAD_INIT_BIAS = -2.0


class ConvBNAct(nn.Sequential):
    """Conv (no bias) + BatchNorm + optional ReLU, 'same' padding."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int = 3, act: bool = True) -> None:
        layers: list[nn.Module] = [
            nn.Conv2d(in_ch, out_ch, kernel, padding=kernel // 2, bias=False),
            nn.BatchNorm2d(out_ch),
        ]
        if act:
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class ContextFeatureRefinement(nn.Module):
    """Four parallel conv-BN-ReLU branches (kernels 1, 3, 7, 11), concatenated, fused by 1x1."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.branches = nn.ModuleList(ConvBNAct(in_ch, out_ch, k) for k in CFR_KERNELS)
        self.fuse = ConvBNAct(out_ch * len(CFR_KERNELS), out_ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fuse(torch.cat([branch(x) for branch in self.branches], dim=1))


def upsample2x(x: torch.Tensor) -> torch.Tensor:
    return nn.functional.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=True)


class SkipReducers(nn.ModuleList):
    """One 3x3 conv-BN-ReLU per encoder level. A ModuleList (its state_dict keys stay
    ``reduce.<i>.*``) with a forward of its own, so that torch.fx and ModelOpt trace through it."""

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        return [reduce(f) for reduce, f in zip(self, feats)]


class DecoderStages(nn.ModuleList):
    """The four CFR stages, coarsest first (keys ``decoder.<i>.*``), with a traceable forward:
    each upsamples x2, concatenates the next finer skip and refines."""

    def forward(self, x: torch.Tensor, skips: list[torch.Tensor]) -> torch.Tensor:
        for stage, skip in zip(self, skips):
            x = stage(torch.cat([upsample2x(x), skip], dim=1))
        return x


def create_encoder(name: str, pretrained: bool = False) -> nn.Module:
    """A timm ``features_only`` encoder returning levels at strides 2, 4, 8, 16 (layer4 unused)."""
    import timm

    try:
        encoder = timm.create_model(name, pretrained=pretrained, features_only=True, out_indices=(0, 1, 2, 3))
    except RuntimeError as exc:  # timm raises RuntimeError for unknown names
        raise ConvSegError(f"unknown encoder {name!r}: use a timm model name such as resnet18, resnet34 or resnet50 ({exc})") from None
    except Exception as exc:  # noqa: BLE001 - hub downloads fail in many ways
        if pretrained:
            raise ConvSegError(
                f"could not download ImageNet weights for {name!r} ({type(exc).__name__}: {exc}); "
                "this needs network access: use --backbone-weights FILE for an offline copy"
            ) from None
        raise
    strides = tuple(encoder.feature_info.reduction())
    if strides != ENCODER_STRIDES:
        raise ConvSegError(
            f"encoder {name!r} gives feature levels at strides {strides}; ConvSegNet needs "
            f"{ENCODER_STRIDES} (ResNet-style encoders such as resnet18/34/50 work)"
        )
    return encoder


class ConvSegNet(nn.Module):
    """Polyp segmentation network; ``forward`` maps N x 3 x H x W inputs to N x 1 x H x W logits.

    ``preprocess`` and ``threshold`` ride along so that whoever holds the model can prepare
    inputs and binarise outputs exactly as the checkpoint says.
    """

    def __init__(
        self,
        config: ModelConfig | None = None,
        pretrained: bool = False,
        preprocess: PreprocessSpec | None = None,
        threshold: float = DEFAULT_THRESHOLD,
    ) -> None:
        super().__init__()
        self.config = config or ModelConfig()
        self.preprocess = preprocess or PreprocessSpec()
        self.threshold = threshold
        ch = self.config.decoder_channels
        self.encoder = create_encoder(self.config.encoder, pretrained)
        enc_channels = self.encoder.feature_info.channels()
        self.reduce = SkipReducers(ConvBNAct(c, ch) for c in enc_channels)
        self.stem_skip = ConvBNAct(3, ch)
        # decoder[0] refines stride 8, ..., decoder[3] full resolution
        self.decoder = DecoderStages(ContextFeatureRefinement(2 * ch, ch) for _ in range(4))
        self.head = ConvBNAct(ch, 1, kernel=1, act=self.config.output_activation == "relu")
        nn.init.constant_(self.head[1].weight, HEAD_INIT_GAIN)
        nn.init.constant_(self.head[1].bias, HEAD_INIT_BIAS)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        # The size check reads concrete shapes: skipped while tracing (torch.jit, torch.compile,
        # torch.fx and ModelOpt's fx-based tracer give symbolic shapes that int() cannot read).
        if not isinstance(image, torch.fx.Proxy) and not torch.jit.is_tracing() and not torch.compiler.is_compiling():
            check_image_size(image.shape[-2], image.shape[-1])
        feats = self.reduce(self.encoder(image))
        skips = [feats[2], feats[1], feats[0], self.stem_skip(image)]  # strides 8, 4, 2, 1
        return self.head(self.decoder(feats[3], skips))  # from stride 16


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def load_backbone_weights(model: ConvSegNet, path: str | Path) -> None:
    """Load a local timm/torchvision state_dict of the encoder (offline ``--pretrained``)."""
    path = Path(path)
    if not path.is_file():
        raise ConvSegError(f"backbone weights {path} not found: pass a .pth/.pt state_dict file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for bad files
        raise ConvSegError(f"backbone weights {path} could not be read ({type(exc).__name__}): pass a torch state_dict") from None
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    own = model.encoder.state_dict()
    matched = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if len(matched) < len(own) // 2:
        raise ConvSegError(
            f"backbone weights {path} match only {len(matched)} of {len(own)} tensors of encoder "
            f"{model.config.encoder!r}: is it the right architecture?"
        )
    model.encoder.load_state_dict(matched, strict=False)
