"""Small flat configuration records that travel with every artifact.

``PreprocessSpec`` and the mask threshold are embedded in checkpoints, ONNX metadata, engine
sidecars and bundle manifests, so that every consumer preprocesses from the artifact itself.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from convseg_deploy.errors import ConvSegError

# Largest image (width x height) decoded; a few hundred KB of PNG can otherwise claim gigabytes.
# Here, not in imaging.py (which re-exports it), so that --help can quote it without OpenCV.
MAX_PIXELS = 50_000_000

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SIZE_MULTIPLE = 16  # the encoder's coarsest level sits at stride 16
DEFAULT_THRESHOLD = 0.5


def check_image_size(height: int, width: int) -> tuple[int, int]:
    """Return ``(height, width)`` or raise an error that says which sizes work."""
    bad = [v for v in (height, width) if int(v) != v or v <= 0 or v % SIZE_MULTIPLE]
    if bad:
        lower = max(SIZE_MULTIPLE, bad[0] // SIZE_MULTIPLE * SIZE_MULTIPLE)
        raise ConvSegError(
            f"image size {height}x{width} is not supported: height and width must be positive "
            f"multiples of {SIZE_MULTIPLE} (e.g. {lower} or {lower + SIZE_MULTIPLE}; 256 is the default)"
        )
    return int(height), int(width)


@dataclass(frozen=True)
class PreprocessSpec:
    """How a decoded frame becomes the model's input tensor.

    size: (height, width) the frame is resized to.
    channel_order: "RGB" or "BGR", the order of the three input channels.
    scale: multiplies the uint8 pixel values (1/255 maps them to [0, 1]).
    mean, std: per-channel normalisation applied after scaling, in ``channel_order``.
    """

    size: tuple[int, int] = (256, 256)
    channel_order: str = "RGB"
    scale: float = 1.0 / 255.0
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self) -> None:
        check_image_size(*self.size)
        if self.channel_order not in ("RGB", "BGR"):
            raise ConvSegError(f"channel_order must be RGB or BGR, got {self.channel_order!r}")
        if len(self.mean) != 3 or len(self.std) != 3 or any(s == 0 for s in self.std):
            raise ConvSegError("mean and std need three values each, and std no zero")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["size"] = list(self.size)
        data["mean"] = list(self.mean)
        data["std"] = list(self.std)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "PreprocessSpec":
        try:
            return cls(
                size=tuple(int(v) for v in data["size"]),
                channel_order=str(data["channel_order"]),
                scale=float(data["scale"]),
                mean=tuple(float(v) for v in data["mean"]),
                std=tuple(float(v) for v in data["std"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConvSegError(f"preprocessing spec is incomplete or malformed ({exc})") from None

    def with_size(self, height: int, width: int) -> "PreprocessSpec":
        return PreprocessSpec((height, width), self.channel_order, self.scale, self.mean, self.std)


REFERENCE_PREPROCESS = PreprocessSpec(
    size=(256, 256), channel_order="BGR", scale=1.0 / 255.0, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0)
)
"""What the authors' reference code does: OpenCV BGR read, resize to 256x256, divide by 255."""


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of a ConvSegNet.

    encoder: timm model name whose ``features_only`` levels 0-3 sit at strides 2, 4, 8, 16.
    decoder_channels: width of the reduced skips and of every CFR block (64 in the paper).
    output_activation: "none" for logits; "relu" reproduces the reference code, whose output
        Conv2D keeps its ReLU (so its sigmoid never drops below 0.5).
    """

    encoder: str = "resnet50"
    decoder_channels: int = 64
    output_activation: str = "none"

    def __post_init__(self) -> None:
        if self.output_activation not in ("none", "relu"):
            raise ConvSegError(f"output_activation must be 'none' or 'relu', got {self.output_activation!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelConfig":
        known = {k: data[k] for k in ("encoder", "decoder_channels", "output_activation") if k in data}
        return cls(**known)


@dataclass
class TrainConfig:
    """The training recipe; defaults follow the reference code (Adam 1e-4, batch 16, 256x256)."""

    encoder: str = "resnet50"
    decoder_channels: int = 64
    image_size: tuple[int, int] = (256, 256)
    epochs: int = 100
    batch_size: int = 16
    lr: float = 1e-4
    weight_decay: float = 0.0
    patience: int = 5  # ReduceLROnPlateau (schedule "plateau")
    # "plateau": the reference's ReduceLROnPlateau on validation loss. "onecycle": a linear warm-up
    # over the first warmup_fraction of the steps to lr, then a cosine decay to lr / final_div by
    # the last step (torch's OneCycleLR), so a short run has converged before its last epochs
    # instead of ending on whatever a late LR drop gives.
    schedule: str = "plateau"
    warmup_fraction: float = 0.1
    final_div: float = 100.0
    early_stop: int = 20  # epochs without validation improvement
    device: str = "auto"
    seed: int = 42
    workers: int = 0
    pretrained: bool = False
    backbone_weights: str | None = None
    augment: bool = True
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    threshold: float = DEFAULT_THRESHOLD
    max_train_images: int | None = None
    # Train on random crop_size x crop_size crops of the image_size frames: objects keep the pixel
    # scale the model is deployed at, for (crop/image)^2 of the compute per step. Validation
    # always sees whole frames.
    crop_size: int | None = None
    # Under torchrun: one BatchNorm over the frames of all processes (the head's single-channel
    # BN and small per-GPU batches make per-process statistics noisy). No effect in one process.
    sync_bn: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        """Types and ranges of every value (YAML gives strings for typos), before anything is built."""
        for name, (kind, low, optional) in _TRAIN_FIELDS.items():
            value = getattr(self, name)
            if value is None and optional:
                continue
            if kind is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
                setattr(self, name, value)
            if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
                raise ConvSegError(f"training option {name} must be {_KIND_NAMES[kind]}, got {value!r}")
            if low is not None and value < low:
                raise ConvSegError(f"training option {name} must be at least {low}, got {value!r}")
        if self.schedule not in SCHEDULES:
            raise ConvSegError(f"training option schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if not 0 < self.warmup_fraction < 1 or self.final_div < 1:
            raise ConvSegError(f"warmup_fraction must be between 0 and 1 and final_div at least 1, got "
                               f"{self.warmup_fraction} and {self.final_div}")
        if self.lr <= 0 or not 0 < self.threshold < 1:
            raise ConvSegError(f"lr must be > 0 and threshold between 0 and 1, got lr {self.lr}, threshold {self.threshold}")
        size = self.image_size
        if not isinstance(size, (tuple, list)) or len(size) != 2 or not all(isinstance(v, int) and not isinstance(v, bool)
                                                                           for v in size):
            raise ConvSegError(f"training option image_size must be one integer or two (height, width), got {size!r}")
        self.image_size = check_image_size(*size)


SCHEDULES = ("plateau", "onecycle")
_KIND_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
# name: (type, minimum or None, may be None)
_TRAIN_FIELDS: dict[str, tuple[type, float | None, bool]] = {
    "encoder": (str, None, False), "decoder_channels": (int, 1, False), "epochs": (int, 1, False),
    "batch_size": (int, 1, False), "lr": (float, None, False), "weight_decay": (float, 0.0, False),
    "patience": (int, 0, False), "schedule": (str, None, False), "warmup_fraction": (float, None, False),
    "final_div": (float, None, False), "early_stop": (int, 1, False), "device": (str, None, False), "seed": (int, None, False),
    "workers": (int, 0, False), "pretrained": (bool, None, False), "backbone_weights": (str, None, True),
    "augment": (bool, None, False), "val_fraction": (float, 0.0, False), "test_fraction": (float, 0.0, False),
    "threshold": (float, None, False), "max_train_images": (int, 1, True), "crop_size": (int, SIZE_MULTIPLE, True),
}
