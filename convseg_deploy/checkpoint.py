"""Checkpoints: our own format, and the authors' reference state_dicts.

Own format: one ``torch.save`` dict with ``format`` = CHECKPOINT_FORMAT, the model config, the
preprocessing spec, the mask threshold, the state_dict, training metrics, epoch and library
versions. Saved atomically. ``load_model`` also accepts the plain state_dict that the reference
implementation (AOige/ConvSegNet, model.py) saves, renaming its keys onto our modules.
"""

from __future__ import annotations

import platform
import re
from pathlib import Path
from typing import Any

import torch

from convseg_deploy.config import DEFAULT_THRESHOLD, REFERENCE_PREPROCESS, ModelConfig, PreprocessSpec
from convseg_deploy.errors import ConvSegError
from convseg_deploy.fsutil import atomic_path
from convseg_deploy.layer_channels import apply_layer_channels, layer_channels
from convseg_deploy.model import ConvSegNet

CHECKPOINT_FORMAT = "convseg-deploy/checkpoint/v1"

# Reference module path -> ours (applied in order, first match wins). The reference wraps a
# torchvision ResNet-50 as layer0 = (conv1, bn1, relu), layer1 = (maxpool, layer1), layer2, layer3.
_REFERENCE_RULES: list[tuple[str, str]] = [
    (r"^encoder\.layer0\.0\.", "encoder.conv1."),
    (r"^encoder\.layer0\.1\.", "encoder.bn1."),
    (r"^encoder\.layer1\.1\.", "encoder.layer1."),
    (r"^encoder\.layer([23])\.", r"encoder.layer\1."),
    (r"^encoder\.c([1-4])\.conv\.", lambda m: f"reduce.{int(m.group(1)) - 1}."),
    (r"^s0\.conv\.", "stem_skip."),
    (r"^c([1-4])\.d([1-4])\.conv\.", lambda m: f"decoder.{int(m.group(1)) - 1}.branches.{int(m.group(2)) - 1}."),
    (r"^c([1-4])\.c1\.conv\.", lambda m: f"decoder.{int(m.group(1)) - 1}.fuse."),
    (r"^output\.conv\.", "head."),
]


def library_versions() -> dict[str, str]:
    import numpy

    from convseg_deploy.version import __version__

    versions = {"convseg_deploy": __version__, "torch": str(torch.__version__), "numpy": str(numpy.__version__),
                "python": platform.python_version()}
    try:
        import timm

        versions["timm"] = timm.__version__
    except ImportError:  # pragma: no cover - timm is a hard dependency of training
        pass
    return versions


def save_checkpoint(path: str | Path, model: ConvSegNet, *, epoch: int = 0, metrics: dict[str, float] | None = None,
                    extra: dict[str, Any] | None = None) -> Path:
    """Write ``model`` with everything needed to rebuild and preprocess for it, atomically."""
    payload = {
        "format": CHECKPOINT_FORMAT,
        "model_config": model.config.to_dict(),
        "preprocess": model.preprocess.to_dict(),
        "threshold": float(model.threshold),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "epoch": int(epoch),
        "metrics": dict(metrics or {}),
        "versions": library_versions(),
        "extra": dict(extra or {}),
    }
    narrowed = layer_channels(model, model.config)
    if narrowed:  # a slimmed model: the channels load_model narrows a fresh model to
        payload["layer_channels"] = narrowed
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return Path(path)


def is_reference_state_dict(state: dict[str, Any]) -> bool:
    keys = {k.removeprefix("module.") for k in state if isinstance(k, str)}  # DataParallel saves too
    return "encoder.layer0.0.weight" in keys and "output.conv.0.weight" in keys


def convert_reference_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename the reference implementation's keys onto ConvSegNet's module names."""
    state = {k.removeprefix("module."): v for k, v in state.items()}  # DataParallel saves
    converted = {}
    for key, value in state.items():
        for pattern, repl in _REFERENCE_RULES:
            new, n = re.subn(pattern, repl, key)
            if n:
                converted[new] = value
                break
        else:
            converted[key] = value  # left for load_state_dict to report as unexpected
    return converted


def _read(path: Path, map_location: str | torch.device) -> Any:
    if not path.exists():
        raise ConvSegError(f"checkpoint {path} not found")
    if path.is_dir():
        raise ConvSegError(f"checkpoint {path} is a folder: pass the .pt file inside it (e.g. {path}/best.pt)")
    try:
        # Own checkpoints hold only tensors, dicts and plain values: the safe loader reads them.
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for bad files
        reason = "truncated" if "EOF" in str(exc) or "central directory" in str(exc) else "not a PyTorch checkpoint"
        raise ConvSegError(f"checkpoint {path} cannot be read ({reason}: {type(exc).__name__}); "
                           "pass a .pt file saved by 'convseg-deploy train' or the reference code") from None


def _load_weights(model: ConvSegNet, state: dict[str, torch.Tensor], path: Path) -> None:
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys (first: {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (first: {unexpected[0]})")
        if mismatched:
            k = mismatched[0]
            parts.append(f"{len(mismatched)} shape mismatches (first: {k} {tuple(state[k].shape)} vs {tuple(own[k].shape)})")
        raise ConvSegError(f"checkpoint {path} does not fit ConvSegNet/{model.config.encoder}: " + "; ".join(parts)
                           + " (another architecture or encoder?)")
    model.load_state_dict(state)


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The checkpoint as our dict format; reference state_dicts are converted on the fly."""
    path = Path(path)
    raw = _read(path, map_location)
    if isinstance(raw, dict) and raw.get("format") == CHECKPOINT_FORMAT:
        for key in ("model_config", "preprocess", "state_dict"):
            if key not in raw:
                raise ConvSegError(f"checkpoint {path} lacks '{key}': it was not written completely; re-save it")
        return raw
    if isinstance(raw, dict) and isinstance(raw.get("state_dict"), dict):
        raw = raw["state_dict"]  # common wrapping of plain state_dicts
    if isinstance(raw, dict) and is_reference_state_dict(raw):
        return {
            "format": "reference",
            "model_config": ModelConfig(encoder="resnet50", output_activation="relu").to_dict(),
            "preprocess": REFERENCE_PREPROCESS.to_dict(),
            "threshold": DEFAULT_THRESHOLD,
            "state_dict": convert_reference_state_dict(raw),
            "epoch": 0,
            "metrics": {},
        }
    raise ConvSegError(f"{path} is not a ConvSegNet checkpoint (neither convseg-deploy's format nor the reference state_dict)")


def model_from_checkpoint(ckpt: dict[str, Any], path: str | Path = "checkpoint") -> ConvSegNet:
    model = ConvSegNet(
        ModelConfig.from_dict(ckpt["model_config"]),
        preprocess=PreprocessSpec.from_dict(ckpt["preprocess"]),
        threshold=float(ckpt.get("threshold", DEFAULT_THRESHOLD)),
    )
    if ckpt.get("layer_channels"):
        apply_layer_channels(model, ckpt["layer_channels"], f"checkpoint {path}")
    _load_weights(model, ckpt["state_dict"], Path(path))
    return model.eval()


def load_model(path: str | Path, map_location: str | torch.device = "cpu") -> ConvSegNet:
    """Load a checkpoint (ours or the reference's) as a ConvSegNet in eval mode.

    The model's ``forward`` takes a preprocessed N x 3 x H x W float32 tensor; its
    ``preprocess`` spec and ``threshold`` say how to make that tensor and binarise the output.
    """
    ckpt = read_checkpoint(path, map_location)
    return model_from_checkpoint(ckpt, path).to(map_location)
