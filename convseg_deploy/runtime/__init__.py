"""Backend runners behind one interface (see ``base.Runner``) and the one place that picks them.

Importing this package imports neither torch, onnxruntime, openvino nor tensorrt: each runner
imports its backend in ``activate``. OpenVINO runs the same .onnx files as ONNX Runtime, so a
file's suffix implies ONNX Runtime and OpenVINO is always asked for by name.
"""

from __future__ import annotations

from pathlib import Path

from convseg_deploy.errors import ConvSegError
from convseg_deploy.runtime.base import Runner, RunnerInfo

BACKENDS = ("torch", "onnxruntime", "openvino", "tensorrt")
SUFFIX_BACKEND = {".pt": "torch", ".pth": "torch", ".onnx": "onnxruntime", ".engine": "tensorrt", ".plan": "tensorrt"}

__all__ = ["BACKENDS", "Runner", "RunnerInfo", "backend_for", "make_runner"]


def backend_for(path: str | Path) -> str:
    """The backend that runs a model file, from its suffix."""
    suffix = Path(path).suffix.lower()
    if suffix not in SUFFIX_BACKEND:
        raise ConvSegError(f"{path} is not a model file this tool runs: expected .pt (PyTorch), .onnx or .engine")
    return SUFFIX_BACKEND[suffix]


def make_runner(path: str | Path, backend: str | None = None, provider: str = "cpu", *,
                threads: int | None = None, precision: str = "fp32", device: int = 0,
                options: dict[str, str] | None = None, spin: bool = True) -> Runner:
    """A runner for ``path``; ``backend`` defaults to the one its suffix implies. ``device`` is the
    CUDA device of GPU backends; ``precision`` is PyTorch's (fp32, bf16 autocast on CPUs, fp16
    autocast on CUDA); ``options`` are OpenVINO's (``hint``: latency|throughput,
    ``inference_precision``: f32|bf16|f16); ``spin``: whether ONNX Runtime's CPU workers
    busy-wait between parallel sections (``ort_session.session_options``)."""
    backend = backend or backend_for(path)
    if backend == "torch":
        from convseg_deploy.runtime.torch_runner import TorchRunner

        return TorchRunner(path, device=f"cuda:{device}" if provider == "cuda" else "cpu", precision=precision,
                           threads=threads)
    if backend == "onnxruntime":
        from convseg_deploy.runtime.onnxruntime_runner import OnnxRuntimeRunner

        return OnnxRuntimeRunner(path, provider=provider, threads=threads, device=device, spin=spin)
    if backend == "openvino":
        from convseg_deploy.runtime.openvino_runner import OpenVinoRunner

        if SUFFIX_BACKEND.get(Path(path).suffix.lower()) != "onnxruntime":
            raise ConvSegError(f"OpenVINO runs .onnx files, not {Path(path).name}")
        settings = {"device": provider, **(options or {})}  # bench rows name the device in their options
        return OpenVinoRunner(path, threads=threads, **settings)  # type: ignore[arg-type]
    if backend == "tensorrt":
        from convseg_deploy.runtime.tensorrt_runner import TensorRTRunner

        return TensorRTRunner(path, device=device)
    raise ConvSegError(f"unknown backend {backend!r}: use one of {', '.join(BACKENDS)}")
