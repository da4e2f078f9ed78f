"""The machine's own limit: measured sustained GMAC/s per precision, and the theoretical figure.

A bench row means little on its own: the same ``int8-cpu`` row is 4.5-7x PyTorch FP32 on a VNNI
Xeon and 1.7x on an AVX2 EPYC. What says how good a row is, on any CPU, is its fraction of what the
hardware does. So the probe times one large dense convolution (7x7, 128 -> 128 channels, the
decoder's kind of layer) for a few seconds through every installed library at the rows' thread
count: ONNX Runtime FP32 and Q/DQ INT8 (u8 activations, s8 per-channel weights, as ``int8-cpu``),
OpenVINO f32, int8 and bf16 (where the CPU has it), PyTorch FP32 (and bf16 where the CPU has it),
and on a CUDA GPU PyTorch (cuDNN) in FP32, FP16 and BF16. The peak of a precision is the best rate
any of them reaches: a row is judged against the best this machine is known to do, not against
its own library.

The theoretical figure (``hardware.limits``: cores x clock x MACs per cycle from the instruction
sets) is marked ``theoretical``: a VM reports a nominal clock, and turbo and throttling move it.

Results are cached per machine and thread count (CPU model, family, flags, library versions,
kernel) as JSON under $CONVSEG_PEAK_CACHE or ~/.cache/convseg-deploy/peak, so a bench does not
reprobe every run; ``reprobe=True`` (``--reprobe``) measures again.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import statistics
import tempfile
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

from convseg_deploy.hardware.limits import cpu_details, theoretical
from convseg_deploy.fsutil import write_json

PROBE_VERSION = 1  # bump when the kernels or the timing change: old cache files then no longer match
CACHE_ENV = "CONVSEG_PEAK_CACHE"
SECONDS_ENV = "CONVSEG_PEAK_SECONDS"  # seconds per kernel [2]; the tests use a fraction of it
DEFAULT_SECONDS = 2.0
KERNEL = {"channels": 128, "kernel": 7, "size": 64}  # 3.29 GMAC per call
MIN_ITERS = 3
# What a bench row's precision is measured against ("int8+bf16": an INT8 file run with bf16 hints).
_PRECISION_CLASS = {"fp32": "fp32", "int8": "int8", "int8-cpu": "int8", "bf16": "bf16", "fp16": "fp16"}


def precision_class(row_precision: str) -> str | None:
    """The probe precision a row computes in (``int8-cpu`` -> ``int8``); None when unknown."""
    return _PRECISION_CLASS.get(row_precision.split("+")[0])


# ---- kernels -------------------------------------------------------------------------------------

def kernel_macs(kernel: dict[str, int] = KERNEL) -> int:
    from convseg_deploy.artifacts.macs import count_macs

    return count_macs(_conv_onnx(kernel, quantized=False)).total  # the one MAC count


def _conv_onnx(kernel: dict[str, int], quantized: bool) -> Any:  # -> onnx.ModelProto
    """One padded KxK convolution C -> C at SxS; ``quantized``: Q/DQ as the int8-cpu files are."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    c, k, s = kernel["channels"], kernel["kernel"], kernel["size"]
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((c, c, k, k)) * 0.02).astype(np.float32)
    pads = [k // 2] * 4
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, s, s])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, c, s, s])
    if not quantized:
        nodes = [helper.make_node("Conv", ["x", "w"], ["y"], pads=pads)]
        inits = [numpy_helper.from_array(w, "w")]
    else:
        wscale = np.abs(w).reshape(c, -1).max(axis=1) / 127
        wq = np.clip(np.round(w / wscale[:, None, None, None]), -127, 127).astype(np.int8)
        inits = [numpy_helper.from_array(a, n) for n, a in (
            ("wq", wq), ("ws", wscale.astype(np.float32)), ("wz", np.zeros(c, np.int8)),
            ("s", np.float32(0.02)), ("z", np.uint8(128)))]
        nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"]),
                 helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"]),
                 helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["wd"], axis=0),
                 helper.make_node("Conv", ["xd", "wd"], ["c"], pads=pads),
                 helper.make_node("QuantizeLinear", ["c", "s", "z"], ["cq"]),
                 helper.make_node("DequantizeLinear", ["cq", "s", "z"], ["y"])]
    graph = helper.make_graph(nodes, "peak", [x], [y], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # what opset 17 needs: the installed onnx's newest IR can be newer than ONNX Runtime reads
    return model


def _time(call: Callable[[], Any], seconds: float) -> float:
    """Median seconds per call over ``seconds`` (at least MIN_ITERS calls) after two warm-up calls."""
    call()
    call()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < MIN_ITERS or time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _onnxruntime(kernel: dict[str, int], threads: int, seconds: float, cpu: dict[str, Any]) -> dict[str, float]:
    import numpy as np

    from convseg_deploy.ort_session import cpu_session

    x = np.random.default_rng(1).standard_normal((1, kernel["channels"], kernel["size"], kernel["size"])).astype(np.float32)
    out = {}
    for precision, quantized in (("fp32", False), ("int8", True)):
        session = cpu_session(_conv_onnx(kernel, quantized).SerializeToString(), threads)
        out[precision] = _time(lambda s=session: s.run(None, {"x": x}), seconds)
    return out


def _openvino(kernel: dict[str, int], threads: int, seconds: float, cpu: dict[str, Any]) -> dict[str, float]:
    import numpy as np
    import onnx

    from convseg_deploy.runtime.openvino_runner import import_openvino

    ov = import_openvino()
    core = ov.Core()
    caps = [str(c) for c in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")]
    x = np.random.default_rng(1).standard_normal((1, kernel["channels"], kernel["size"], kernel["size"])).astype(np.float32)
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for precision, quantized, hint in (("fp32", False, "f32"), ("int8", True, "f32"), ("bf16", False, "bf16")):
            if hint == "bf16" and ("BF16" not in caps or not cpu.get("bf16")):
                continue  # emulated bf16 is slower than f32: not a peak of this machine
            path = Path(tmp) / f"{precision}.onnx"
            onnx.save(_conv_onnx(kernel, quantized), str(path))
            config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": hint,
                      "INFERENCE_NUM_THREADS": int(threads)}
            request = core.compile_model(core.read_model(str(path)), "CPU", config).create_infer_request()
            out[precision] = _time(lambda r=request: r.infer({0: x}), seconds)
    return out


def _torch_cpu(kernel: dict[str, int], threads: int, seconds: float, cpu: dict[str, Any]) -> dict[str, float]:
    import torch

    c, k, s = kernel["channels"], kernel["kernel"], kernel["size"]
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    out = {}
    try:
        with torch.inference_mode():
            for precision, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
                if precision == "bf16" and not cpu.get("bf16"):
                    continue
                x, w = torch.randn(1, c, s, s, dtype=dtype), torch.randn(c, c, k, k, dtype=dtype) * 0.02
                out[precision] = _time(lambda x=x, w=w: torch.nn.functional.conv2d(x, w, padding=k // 2), seconds)
    finally:
        torch.set_num_threads(before)
    return out


def _torch_cuda(kernel: dict[str, int], seconds: float) -> dict[str, float]:
    import torch

    if not torch.cuda.is_available():
        return {}
    c, k = kernel["channels"], kernel["kernel"]
    s = kernel["size"] * 4  # a GPU needs more work per call to be busy
    out = {}
    torch.backends.cudnn.benchmark = True
    for precision, dtype in (("fp32", torch.float32), ("fp16", torch.float16), ("bf16", torch.bfloat16)):
        x = torch.randn(1, c, s, s, dtype=dtype, device="cuda")
        w = torch.randn(c, c, k, k, dtype=dtype, device="cuda") * 0.02

        def call(x: Any = x, w: Any = w) -> None:
            torch.nn.functional.conv2d(x, w, padding=k // 2)
            torch.cuda.synchronize()  # time the work, not the launch

        out[precision] = _time(call, seconds) / 16  # 16x the CPU kernel's MACs per call
    return out


CPU_LIBRARIES: dict[str, Callable[..., dict[str, float]]] = {
    "onnxruntime": _onnxruntime, "openvino": _openvino, "torch": _torch_cpu}


def measure(threads: int, seconds: float, kernel: dict[str, int] = KERNEL,
            cpu: dict[str, Any] | None = None) -> dict[str, Any]:
    """Measured GMAC/s per precision: per library, and the best (the peak) with who reached it.
    A library that is not installed or fails is listed under ``errors`` and measured no further."""
    cpu = cpu if cpu is not None else cpu_details()
    macs = kernel_macs(kernel)
    libraries: dict[str, dict[str, float]] = {}
    errors: dict[str, str] = {}
    for name, probe in CPU_LIBRARIES.items():
        try:
            libraries[name] = {p: round(macs / t / 1e9, 1) for p, t in probe(kernel, threads, seconds, cpu).items()}
        except Exception as exc:  # noqa: BLE001 - a missing or broken library: the others still measure
            errors[name] = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
    peaks: dict[str, dict[str, Any]] = {}
    for name, rates in libraries.items():
        for precision, rate in rates.items():
            if precision not in peaks or rate > peaks[precision]["gmac_per_s"]:
                peaks[precision] = {"gmac_per_s": rate, "library": name}
    gpu: dict[str, Any] = {}
    try:
        gpu = {p: {"gmac_per_s": round(macs / t / 1e9, 1), "library": "torch-cuda"}
               for p, t in _torch_cuda(kernel, seconds).items()}
    except Exception as exc:  # noqa: BLE001
        errors["torch-cuda"] = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
    return {"peaks": peaks, "libraries": libraries, "gpu": gpu, "errors": errors}


# ---- cache and entry point -------------------------------------------------------------------------

def cache_dir() -> Path | None:
    """$CONVSEG_PEAK_CACHE, else ~/.cache/convseg-deploy/peak; None (no cache) when set to ''."""
    value = os.environ.get(CACHE_ENV)
    if value is not None:
        return Path(value) if value else None
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "convseg-deploy" / "peak"


def _versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for key, names in (("onnxruntime", ("onnxruntime-gpu", "onnxruntime")), ("openvino", ("openvino",)),
                       ("torch", ("torch",))):
        found[key] = next((v for v in (_dist_version(n) for n in names) if v), None)
    return found


def _dist_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def probe_key(cpu: dict[str, Any], threads: int, kernel: dict[str, int] = KERNEL) -> dict[str, Any]:
    return {"probe": PROBE_VERSION, "cpu": cpu["model"], "vendor": cpu["vendor"], "family": cpu["family"],
            "model_number": cpu["model_number"], "flags": sorted(cpu["all_flags"]), "threads": threads,
            "versions": _versions(), "kernel": kernel}


def _cache_file(key: dict[str, Any]) -> Path | None:
    folder = cache_dir()
    if folder is None:
        return None
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    slug = re.sub(r"[^A-Za-z0-9]+", "-", key["cpu"]).strip("-").lower() or "cpu"
    return folder / f"{slug}-t{key['threads']}-{digest}.json"


def machine_peak(threads: int, *, reprobe: bool = False, seconds: float | None = None,
                 kernel: dict[str, int] = KERNEL) -> dict[str, Any]:
    """Measured and theoretical GMAC/s per precision at ``threads`` threads, from the cache when
    this machine, thread count and library versions were probed before (``reprobe``: measure again)."""
    cpu = cpu_details()
    seconds = float(os.environ.get(SECONDS_ENV, DEFAULT_SECONDS)) if seconds is None else seconds
    key = probe_key(cpu, threads, kernel)
    path = _cache_file(key)
    if path is not None and path.is_file() and not reprobe:
        try:
            cached = json.loads(path.read_text())
            if cached.get("key") == key:
                return {**cached, "cached": True}
        except (OSError, ValueError):
            pass  # unreadable or half-written by an older version: measure again
    started = time.time()
    result = {"key": key, "threads": threads, "seconds_per_kernel": seconds,
              "kernel": {**kernel, "gmac": round(kernel_macs(kernel) / 1e9, 3)},
              "measured": measure(threads, seconds, kernel, cpu), "theoretical": theoretical(cpu, threads),
              "clock_ghz": cpu["clock_ghz"], "clock_source": cpu["clock_source"],
              "probed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
              "probe_s": round(time.time() - started, 1)}
    if path is not None:
        try:
            write_json(path, result)  # atomic: a second bench never reads half a file
        except OSError:
            pass  # a read-only home still gets its numbers, only not cached
    return {**result, "cached": False}


def summary(peak: dict[str, Any]) -> dict[str, Any]:
    """``doctor --json``'s ``peak``: measured and theoretical GMAC/s per precision."""
    measured = peak["measured"]
    return {"threads": peak["threads"],
            "measured": {p: v["gmac_per_s"] for p, v in measured["peaks"].items()},
            "measured_by": {p: v["library"] for p, v in measured["peaks"].items()},
            "libraries": measured["libraries"], "gpu": {p: v["gmac_per_s"] for p, v in measured["gpu"].items()},
            "theoretical": {p: v["gmac_per_s"] for p, v in peak["theoretical"].items()},
            "theoretical_basis": {p: v["basis"] for p, v in peak["theoretical"].items()},
            "theoretical_note": "theoretical: from instruction sets, cores and the reported clock (a VM's clock is "
                                "not a fact)", "errors": measured["errors"], "cached": peak.get("cached", False)}


def format_peak(s: dict[str, Any]) -> list[str]:
    """Lines of a ``summary``: measured (best library) next to theoretical per precision, for
    ``doctor`` and the bench report's header."""
    lines = []
    for precision in ("fp32", "int8", "bf16", "fp16"):
        got, limit = s["measured"].get(precision), s["theoretical"].get(precision)
        if got is None and limit is None:
            continue
        measured = f"{got:.0f} GMAC/s measured ({s['measured_by'][precision]})" if got is not None else "not measured"
        theory = f"{limit:.0f} GMAC/s theoretical" if limit is not None else "no theoretical figure"
        lines.append(f"{precision}: {measured}, {theory}")
    if s["gpu"]:
        lines.append("GPU: " + ", ".join(f"{p} {v:.0f} GMAC/s measured (torch-cuda)" for p, v in s["gpu"].items()))
    lines += [f"{library} not measured: {why}" for library, why in s["errors"].items()]
    return lines
