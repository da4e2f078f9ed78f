"""``doctor``: one screen on what this machine can run.

Python; PyTorch and its CUDA (the only command that imports torch on purpose: it is the one
asked about); GPUs with their compute capability; ONNX Runtime and which of its providers really
load (a session on a one-node model per listed provider, not the list alone); TensorRT and
pycuda; the CPU and whether it has VNNI, which makes INT8 several times faster than FP32.
"""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path
from typing import Any

VNNI_FLAGS = ("avx512_vnni", "avx_vnni")


def cpu_info(cpuinfo: Path = Path("/proc/cpuinfo")) -> dict[str, Any]:
    """CPU model, core count and the instruction-set flags that matter for INT8 and FP32 speed."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "model name" and model in ("", platform.machine(), platform.processor()):
                model = value.strip()
            elif key in ("flags", "Features") and not flags:  # Features: the line on ARM (Jetson)
                flags = set(value.split())
    except OSError:
        pass  # not Linux: the flags stay unknown
    found = [f for f in ("avx2", "avx512f", *VNNI_FLAGS, "amx_int8", "asimddp") if f in flags]
    return {"model": model, "cores": os.cpu_count(), "flags": found,
            "vnni": any(f in flags for f in VNNI_FLAGS), "flags_known": bool(flags)}


def torch_info() -> dict[str, Any]:
    try:
        import torch
    except (ImportError, OSError) as exc:  # OSError: a CUDA build whose libraries are missing
        return {"installed": False, "error": str(exc).splitlines()[0] if str(exc) else type(exc).__name__}
    cuda = bool(torch.cuda.is_available())
    info: dict[str, Any] = {"installed": True, "version": str(torch.__version__), "cuda_build": torch.version.cuda,
                            "cuda_available": cuda, "devices": []}
    if cuda:
        info["cudnn"] = torch.backends.cudnn.version()
        for i in range(torch.cuda.device_count()):
            major, minor = torch.cuda.get_device_capability(i)
            info["devices"].append({"name": torch.cuda.get_device_name(i), "compute_capability": f"{major}.{minor}"})
    return info


def gpu_info() -> list[dict[str, Any]]:
    """Every CUDA device (index, name, compute capability, memory, driver), from the one probe."""
    from convseg_deploy.artifacts.device import list_gpus

    return list_gpus()


def onnxruntime_info() -> dict[str, Any]:
    from convseg_deploy.deploy.select import provider_loads

    try:
        import onnxruntime as ort
    except ImportError as exc:
        return {"installed": False, "error": str(exc), "providers": []}
    providers = []
    for name in ort.get_available_providers():
        loads, why = provider_loads(name)
        providers.append({"name": name, "loads": loads, **({"error": why} if why else {})})
    return {"installed": True, "version": ort.__version__, "providers": providers}


def _module_version(name: str) -> dict[str, Any]:
    try:
        module = __import__(name)
    except (ImportError, OSError) as exc:  # OSError: the wheel is there but its libraries are not
        return {"installed": False, "error": str(exc).splitlines()[0] if str(exc) else type(exc).__name__}
    version = getattr(module, "__version__", None) or ".".join(map(str, getattr(module, "VERSION", ()) or ()))
    return {"installed": True, "version": str(version or "unknown")}


def collect() -> dict[str, Any]:
    """Everything ``doctor`` reports, as plain JSON-ready data."""
    from convseg_deploy.artifacts.device import jetson_info

    torch = torch_info()
    info: dict[str, Any] = {
        "python": {"version": platform.python_version(), "executable": sys.executable,
                   "platform": platform.platform()},
        "cpu": cpu_info(),
        "torch": torch,
        "gpus": gpu_info(),
        "jetson": jetson_info(),
        "onnxruntime": onnxruntime_info(),
        "tensorrt": _module_version("tensorrt"),
        "pycuda": _module_version("pycuda"),
    }
    info["can_run"] = can_run(info)
    return info


def can_run(info: dict[str, Any]) -> list[str]:
    """Plain-words list of the backends this machine can use."""
    out = []
    if info["torch"].get("installed"):
        out.append("PyTorch CPU" + (" and CUDA" if info["torch"].get("cuda_available") else ""))
    loaded = {p["name"] for p in info["onnxruntime"].get("providers", []) if p["loads"]}
    if "CPUExecutionProvider" in loaded:
        fast = "INT8 fast: VNNI" if info["cpu"]["vnni"] else "no VNNI: INT8 gains little"
        out.append(f"ONNX Runtime CPU ({fast})")
    for name, label in (("CUDAExecutionProvider", "ONNX Runtime CUDA"), ("TensorrtExecutionProvider",
                                                                          "ONNX Runtime TensorRT provider")):
        if name in loaded:
            out.append(label)
    if info["tensorrt"].get("installed") and info["pycuda"].get("installed") and info["gpus"]:
        caps = sorted({"sm_" + g["compute_capability"].replace(".", "") for g in info["gpus"]})
        out.append(f"TensorRT {info['tensorrt']['version']} engines built for {', '.join(caps)}")
    return out


def _state(entry: dict[str, Any]) -> str:
    return entry.get("version", "?") if entry.get("installed") else f"not installed ({entry.get('error', '')})"


def format_text(info: dict[str, Any]) -> str:
    """One screen of ``collect()``'s answer."""
    py, cpu, torch, ort = info["python"], info["cpu"], info["torch"], info["onnxruntime"]
    flags = ", ".join(cpu["flags"]) if cpu["flags_known"] else "unknown"
    lines = [f"Python       {py['version']} ({py['executable']})", f"Platform     {py['platform']}",
             f"CPU          {cpu['model']}, {cpu['cores']} cores; flags: {flags or 'none of note'}",
             f"INT8 on CPU  {'fast (VNNI)' if cpu['vnni'] else 'no VNNI: little faster than FP32'}"]
    if torch.get("installed"):
        cuda = f"CUDA {torch['cuda_build']}" if torch.get("cuda_build") else "CPU-only build"
        lines.append(f"PyTorch      {torch['version']} ({cuda}; GPU usable: {'yes' if torch['cuda_available'] else 'no'})")
    else:
        lines.append(f"PyTorch      {_state(torch)}")
    gpus = info["gpus"] or []
    lines.append("GPUs         " + ("; ".join(
        f"{g['index']}: {g['name']} (sm_{g['compute_capability'].replace('.', '')}"
        + (f", {g['memory_mib']} MiB" if g.get("memory_mib") else "") + (f", driver {g['driver']}" if g.get("driver") else "")
        + ")" for g in gpus) or "none found"))
    jetson = info.get("jetson")
    if jetson:
        clocks = {True: "locked (jetson_clocks)", False: "not locked: run 'sudo jetson_clocks' before timing"}
        lines.append(f"Jetson       {jetson.get('board') or '?'}, {jetson.get('l4t') or 'L4T ?'}; power mode "
                     f"{jetson.get('power_mode') or 'unknown (nvpmodel -q)'}; clocks {clocks.get(jetson.get('clocks_locked'), 'unknown')}")
    lines.append(f"ONNX Runtime {_state(ort)}")
    for p in ort.get("providers", []):
        lines.append(f"  {p['name']:<28} {'loads' if p['loads'] else 'does not load'}"
                     + (f": {p['error']}" if p.get("error") and not p["loads"] else ""))
    lines.append(f"TensorRT     {_state(info['tensorrt'])}")
    lines.append(f"pycuda       {_state(info['pycuda'])}")
    lines.append("Can run      " + ("; ".join(info["can_run"]) or "nothing: install onnxruntime"))
    return "\n".join(lines)
