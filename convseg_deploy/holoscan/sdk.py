"""Importing the Holoscan SDK (the ``holoscan-cu12`` wheel) and its operators, one at a time.

The wheel's core links ``libcudart.so.12``. A pip install brings it in the
``nvidia-cuda-runtime-cu12`` wheel, outside the loader's search path, so it is loaded (globally,
by path) before ``holoscan`` is imported; on a device with CUDA installed the system's copy is
found first. Operators are imported one by one because their libraries link different CUDA
libraries (InferenceOp: libnvrtc and TensorRT; FormatConverterOp: NPP; HolovizOp: libcuda;
V4L2VideoCaptureOp: Ubuntu's libjpeg.so.8) and a CPU machine has only some of them.
"""

from __future__ import annotations

import ctypes
import importlib
import importlib.util
import os
from pathlib import Path
from types import ModuleType
from typing import Any

from convseg_deploy.errors import MissingDependencyError, shorten

INSTALL_HINT = 'pip install "convseg-deploy[holoscan]" (the holoscan-cu12 wheel; Linux x86_64 or aarch64)'
CUDART = "libcudart.so.12"
# operator class -> its module under holoscan.operators
OPERATOR_MODULES = {
    "FormatConverterOp": "format_converter",
    "InferenceOp": "inference",
    "SegmentationPostprocessorOp": "segmentation_postprocessor",
    "HolovizOp": "holoviz",
    "VideoStreamReplayerOp": "video_stream_replayer",
    "VideoStreamRecorderOp": "video_stream_recorder",  # not used by the application: it makes test recordings
    "V4L2VideoCaptureOp": "v4l2_video_capture",
}


def _preload_cudart() -> None:
    try:
        ctypes.CDLL(CUDART, mode=ctypes.RTLD_GLOBAL)
        return
    except OSError:
        pass
    try:
        import nvidia.cuda_runtime as runtime  # the nvidia-cuda-runtime-cu12 wheel (a namespace package)
    except ImportError:
        return
    for folder in runtime.__path__:
        library = Path(folder) / "lib" / CUDART
        if library.is_file():
            ctypes.CDLL(str(library), mode=ctypes.RTLD_GLOBAL)
            return


def import_holoscan() -> ModuleType:
    """``holoscan`` with its core loaded, or a MissingDependencyError saying what to install."""
    # The SDK warns about an 8 MB stack on import; Python operators here need no more.
    os.environ.setdefault("HOLOSCAN_LOG_LEVEL", "WARN")
    _preload_cudart()
    try:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            holoscan = importlib.import_module("holoscan")
            importlib.import_module("holoscan.core")
    except ImportError as exc:
        missing = "" if isinstance(exc, ModuleNotFoundError) and exc.name == "holoscan" else f" ({shorten(exc, 200)})"
        raise MissingDependencyError(f"the Holoscan SDK cannot be imported{missing}: {INSTALL_HINT}") from None
    return holoscan


def operator(name: str) -> Any:
    """The operator class ``name`` of holoscan.operators, imported alone."""
    import_holoscan()
    module = f"holoscan.operators.{OPERATOR_MODULES[name]}"
    try:
        return getattr(importlib.import_module(module), name)
    except ImportError as exc:
        raise MissingDependencyError(f"Holoscan's {name} cannot be loaded on this machine ({shorten(exc, 200)}): "
                                     "it needs the CUDA libraries of a GPU machine (on this one run the CPU path: --path cpu)") from None


def operator_library(name: str) -> Path:
    """The compiled Python module of operator ``name`` in the installed wheel (found without
    importing it, so its docstrings can be read where it cannot load)."""
    spec = importlib.util.find_spec("holoscan")
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError(f"the Holoscan SDK is not installed: {INSTALL_HINT}")
    folder = Path(next(iter(spec.submodule_search_locations))) / "operators" / OPERATOR_MODULES[name]
    found = sorted(folder.glob(f"_{OPERATOR_MODULES[name]}*.so"))
    if not found:
        raise MissingDependencyError(f"the installed Holoscan SDK has no {name} library under {folder}")
    return found[0]
