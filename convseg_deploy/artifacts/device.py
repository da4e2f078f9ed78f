"""The one device probe: which GPU this machine has (whichever library can tell) and what its CPU
can do fast (VNNI for INT8, AMX/AVX512-BF16 for BF16).

Engines are bound to a GPU architecture, and TensorRT does not report the GPU it builds for, so
building, running, ``doctor``, ``bench`` and ``verify`` all ask here. The CPU flags decide which
CPU rows are worth running (BF16 without hardware support is emulated and slow) and whether
``predict`` prefers OpenVINO.
"""

from __future__ import annotations

import functools
import os
import platform
import shutil
import subprocess
from pathlib import Path
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


VNNI_FLAGS = ("avx512_vnni", "avx_vnni")
BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # the CPUs where BF16 inference is faster than FP32
_NOTABLE = ("avx2", "avx512f", *VNNI_FLAGS, *BF16_FLAGS, "amx_int8", "asimddp")


def cpu_info(cpuinfo: Path = Path("/proc/cpuinfo")) -> dict[str, Any]:
    """CPU model, vendor, core count and the instruction-set flags that matter for INT8, BF16 and
    FP32 speed (``flags_known`` False: not Linux, the flags could not be read)."""
    model, vendor, flags = platform.processor() or platform.machine(), "", set()
    try:
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "model name" and model in ("", platform.machine(), platform.processor()):
                model = value.strip()
            elif key == "vendor_id" and not vendor:
                vendor = value.strip()
            elif key in ("flags", "Features") and not flags:  # Features: the line on ARM (Jetson)
                flags = set(value.split())
    except OSError:
        pass  # not Linux: the flags stay unknown
    return {"model": model, "vendor": vendor, "cores": os.cpu_count(), "flags": [f for f in _NOTABLE if f in flags],
            "vnni": any(f in flags for f in VNNI_FLAGS), "bf16": any(f in flags for f in BF16_FLAGS),
            "amx": "amx_int8" in flags or "amx_bf16" in flags,
            "intel": vendor == "GenuineIntel" or "intel" in model.lower(), "flags_known": bool(flags)}


@functools.cache
def this_cpu() -> dict[str, Any]:
    """``cpu_info()`` of this machine, read once per process."""
    return cpu_info()
