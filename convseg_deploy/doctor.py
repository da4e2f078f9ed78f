"""``doctor``: one screen on what this machine can run.

Python; PyTorch and its CUDA (the only command that imports torch on purpose: it is the one
asked about); GPUs with their compute capability; ONNX Runtime and which of its providers really
load (a session on a one-node model per listed provider, not the list alone); TensorRT and
pycuda; the CPU (model, microarchitecture) and its instruction sets: AVX2, AVX-512, VNNI (which
makes INT8 several times faster than FP32), AVX512-BF16 and AMX; OpenVINO, whether it is
installed and whether this CPU is one where it helps;
the machine's peak GMAC/s per precision, measured (cached) and theoretical (``hardware.peak``).
"""

from __future__ import annotations

import platform
import sys
from typing import Any

from convseg_deploy.hardware.cpu import cpu_info, describe


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


def openvino_info() -> dict[str, Any]:
    """OpenVINO's version, the devices it sees and what each computes natively."""
    from convseg_deploy.runtime.openvino_runner import device_capabilities, import_openvino

    try:
        ov = import_openvino()
        core = ov.Core()
        devices = {name: device_capabilities(core, name) for name in core.available_devices}
    except Exception as exc:  # noqa: BLE001 - MissingDependencyError, or a broken install
        return {"installed": False, "error": str(exc).splitlines()[0] if str(exc) else type(exc).__name__}
    return {"installed": True, "version": str(ov.__version__).split("-")[0], "devices": devices}


def openvino_advice(cpu: dict[str, Any], ov: dict[str, Any]) -> str:
    """Whether OpenVINO would help on this machine, and whether it is there."""
    from convseg_deploy.artifacts.names import OPENVINO_INSTALL_HINT

    have = [name for key, name in (("amx", "AMX"), ("vnni", "VNNI"), ("bf16", "BF16")) if cpu.get(key)]
    if not cpu.get("intel"):
        why = "not an Intel CPU: OpenVINO gains little here"
    elif have:
        why = f"would help: Intel CPU with {', '.join(have)} (OpenVINO runs the INT8 files several times faster than ONNX Runtime)"
    else:
        why = "Intel CPU without VNNI/AMX: OpenVINO gains less here"
    state = "installed, predict --backend auto uses it" if ov.get("installed") else f"not installed ({OPENVINO_INSTALL_HINT})"
    return f"{why}; {state}"


def peak_info(threads: int | None = None, reprobe: bool = False) -> dict[str, Any]:
    """``peak``: measured and theoretical GMAC/s per precision at bench's default thread count."""
    from convseg_deploy.hardware.cpu import physical_cores
    from convseg_deploy.hardware.peak import machine_peak, summary

    return summary(machine_peak(threads or physical_cores(), reprobe=reprobe))


def collect(threads: int | None = None, reprobe: bool = False) -> dict[str, Any]:
    """Everything ``doctor`` reports, as plain JSON-ready data (the peak probe at ``threads``)."""
    from convseg_deploy.hardware.gpu import jetson_info, list_gpus

    torch = torch_info()
    info: dict[str, Any] = {
        "python": {"version": platform.python_version(), "executable": sys.executable,
                   "platform": platform.platform()},
        "cpu": cpu_info(),
        "torch": torch,
        "gpus": list_gpus(),  # every CUDA device: index, name, compute capability, memory, driver
        "jetson": jetson_info(),
        "onnxruntime": onnxruntime_info(),
        "openvino": openvino_info(),
        "tensorrt": _module_version("tensorrt"),
        "pycuda": _module_version("pycuda"),
    }
    info["openvino"]["advice"] = openvino_advice(info["cpu"], info["openvino"])
    info["peak"] = peak_info(threads, reprobe)
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
    for device, caps in info["openvino"].get("devices", {}).items():
        out.append(f"OpenVINO {device} ({', '.join(caps) or 'capabilities unknown'})")
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
             f"CPU          {describe(cpu)}",
             f"CPU flags    {flags or 'none of note'}",
             f"INT8 on CPU  {'fast (VNNI)' if cpu['vnni'] else 'no VNNI: little faster than FP32'}",
             f"BF16 on CPU  {'fast (AMX/AVX512-BF16)' if cpu['bf16'] else 'no AMX/AVX512-BF16: bf16 rows are skipped'}"]
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
    ov = info["openvino"]
    devices = f" (devices {', '.join(ov['devices']) or 'none'})" if ov.get("installed") else ""
    lines.append(f"OpenVINO     {_state(ov) if not ov.get('installed') else ov['version']}{devices}")
    lines.append(f"  {ov['advice']}")
    lines.append(f"TensorRT     {_state(info['tensorrt'])}")
    lines.append(f"pycuda       {_state(info['pycuda'])}")
    lines.append("Can run      " + ("; ".join(info["can_run"]) or "nothing: install onnxruntime"))
    if info.get("peak"):  # collect() always probes; a handmade or older answer may not have it
        lines.append(format_peak_block(info["peak"]))
    return "\n".join(lines)


def format_peak_block(peak: dict[str, Any]) -> str:
    """The peak lines of ``doctor``."""
    from convseg_deploy.hardware.peak import format_peak

    cached = "cached probe; --reprobe measures again" if peak["cached"] else "measured now"
    head = f"Peak         at {peak['threads']} threads ({cached}); {peak['theoretical_note']}"
    return "\n".join([head, *(f"  {line}" for line in format_peak(peak))])
