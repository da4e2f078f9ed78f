"""The one CUDA device probe: which GPU this machine has, whichever library can tell.

Engines are bound to a GPU architecture, and TensorRT does not report the GPU it builds for, so
building, running, ``doctor``, ``bench`` and ``verify`` all ask here.
"""

from __future__ import annotations

import shutil
import subprocess
from types import ModuleType
from typing import Any

from convseg_deploy.artifacts.names import TENSORRT_INSTALL_HINT
from convseg_deploy.errors import MissingDependencyError

_UNKNOWN = object()  # a probe that cannot tell (library or tool missing), as opposed to "no GPU"


def import_tensorrt() -> ModuleType:
    """The ``tensorrt`` module, or a one-line MissingDependencyError saying how to get it."""
    try:
        import tensorrt
    except (ImportError, OSError) as exc:  # OSError: the wheel is there but libnvinfer is not
        raise MissingDependencyError(
            f"TensorRT is not installed ({exc}): {TENSORRT_INSTALL_HINT} on the machine with the target GPU "
            "(engines must be built on the GPU that runs them)"
        ) from None
    return tensorrt


def cuda_device_info() -> tuple[str, str] | None:
    """Name and compute capability (e.g. "8.7") of CUDA device 0, or None when there is no GPU.

    TensorRT does not report the GPU it builds for, so ask pycuda, then torch, then nvidia-smi,
    whichever this machine has.
    """
    for probe in (_probe_pycuda, _probe_torch, _probe_nvidia_smi):
        found = probe()
        if found is not _UNKNOWN:
            return found  # type: ignore[return-value]
    return None


def _probe_pycuda() -> Any:
    try:
        import pycuda.driver as cuda
    except ImportError:
        return _UNKNOWN
    try:
        cuda.init()
        if cuda.Device.count() == 0:
            return None
        device = cuda.Device(0)
        major, minor = device.compute_capability()
        return str(device.name()), f"{major}.{minor}"
    except Exception:  # noqa: BLE001 - pycuda.driver.Error without a driver: no usable GPU
        return None


def _probe_torch() -> Any:
    try:
        import torch
    except ImportError:
        return _UNKNOWN
    if not torch.cuda.is_available():
        return _UNKNOWN  # a CPU-only torch build says nothing about the GPU
    major, minor = torch.cuda.get_device_capability(0)
    return str(torch.cuda.get_device_name(0)), f"{major}.{minor}"


def _probe_nvidia_smi() -> Any:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return _UNKNOWN
    cmd = [exe, "--query-gpu=name,compute_cap", "--format=csv,noheader", "-i", "0"]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=20, check=True).stdout
        name, cap = (part.strip() for part in out.strip().splitlines()[0].rsplit(",", 1))
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return _UNKNOWN
    return name, cap
