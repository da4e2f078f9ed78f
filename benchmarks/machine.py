"""What machine the numbers were measured on: CPU, cores, threads, GPU, driver, versions.

Versions come from package metadata where possible, so describing the machine imports neither
torch, onnxruntime nor tensorrt; the CPU probe is ``convseg_deploy.hardware.cpu`` (model,
microarchitecture and the instruction sets every number depends on), the GPU probe that of
``convseg_deploy.hardware.gpu`` (all GPUs; on a Jetson also the power mode and whether the
clocks are locked).
"""

from __future__ import annotations

import platform
from importlib import metadata
from pathlib import Path
from typing import Any

# Distribution names to try for each reported version, first found wins.
PACKAGES = {
    "numpy": ("numpy",),
    "torch": ("torch",),
    "onnx": ("onnx",),
    "onnxruntime": ("onnxruntime-gpu", "onnxruntime", "onnxruntime-directml"),
    "openvino": ("openvino",),
    "tensorrt": ("tensorrt", "tensorrt-cu13", "tensorrt-cu12", "tensorrt_lean", "tensorrt-lean"),
    "pycuda": ("pycuda",),
    "opencv": ("opencv-python-headless", "opencv-python", "opencv-contrib-python"),
    "convseg_deploy": ("convseg-deploy",),
}


def _version(names: tuple[str, ...]) -> str | None:
    for name in names:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def _tensorrt_version() -> str | None:
    # JetPack installs TensorRT from apt, without pip metadata: ask the module itself.
    try:
        import tensorrt

        return str(tensorrt.__version__)
    except (ImportError, OSError, AttributeError):
        return None


def gpu_info(device: int = 0) -> dict[str, Any]:
    """The GPU the rows ran on (name, compute capability, driver; None without one), every GPU,
    and on a Jetson its power mode and clock lock."""
    from convseg_deploy.hardware.gpu import jetson_info, list_gpus

    gpus = list_gpus()
    used = next((g for g in gpus if g["index"] == device), None) or {}
    return {"gpu": used.get("name"), "compute_capability": used.get("compute_capability"),
            "driver": used.get("driver"), "gpus": gpus, "jetson": jetson_info()}


def describe_machine(threads: int, device: int = 0) -> dict[str, Any]:
    """The ``machine`` section of report.json."""
    from convseg_deploy.hardware.cpu import available_cpus, describe, isa_summary, physical_cores, this_cpu

    cpu = this_cpu()
    versions: dict[str, str | None] = {"python": platform.python_version()}
    versions.update({key: _version(names) for key, names in PACKAGES.items()})
    versions["tensorrt"] = versions["tensorrt"] or _tensorrt_version()
    return {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "cpu": cpu["model"],
        "cpu_description": describe(cpu),  # model, microarchitecture, cores and instruction sets in one line
        "cpu_isa": isa_summary(cpu),
        "cpu_flags": cpu["flags"],  # the instruction sets that set FP32, INT8 and BF16 speed
        "physical_cores": physical_cores(),
        "logical_cpus": available_cpus(),
        "threads": threads,
        **gpu_info(device),
        "versions": versions,
    }


def cpu_times(stat: Path = Path("/proc/stat")) -> list[int] | None:
    """The machine's aggregate CPU time counters (user, nice, system, idle, iowait, irq, softirq,
    steal; in clock ticks), or None where the file does not exist (not Linux)."""
    try:
        fields = stat.read_text().splitlines()[0].split()
    except (OSError, IndexError):
        return None
    return [int(v) for v in fields[1:9]] if fields and fields[0] == "cpu" and len(fields) >= 9 else None


def steal_share(before: list[int] | None, after: list[int] | None) -> float | None:
    """The share of this VM's CPU time that its hypervisor gave to other guests between two
    ``cpu_times`` readings ("steal"): a shared host slows every thread by it, and a speed ratio
    measured while it was high says nothing about the code. None where it cannot be read."""
    if before is None or after is None:
        return None
    delta = [b - a for a, b in zip(before, after)]
    total = sum(delta)
    return round(delta[7] / total, 4) if total > 0 else None
