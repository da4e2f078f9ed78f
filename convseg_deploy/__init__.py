"""convseg-deploy: ConvSegNet polyp segmentation from PyTorch to ONNX, TensorRT and edge devices."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["__version__", "load_model", "ConvSegError"]

from convseg_deploy.errors import ConvSegError
from convseg_deploy.version import __version__

if TYPE_CHECKING:  # pragma: no cover
    from convseg_deploy.checkpoint import load_model


def __getattr__(name: str) -> Any:
    # load_model needs torch; edge installs (ONNX/TensorRT only) import this package without it.
    if name == "load_model":
        from convseg_deploy.checkpoint import load_model

        return load_model
    raise AttributeError(name)
