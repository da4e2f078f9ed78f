"""Backend runners behind one interface (see ``base.Runner``) and the one place that picks them.

Importing this package imports neither torch, onnxruntime nor tensorrt: each runner imports
its backend in ``activate``.
"""

from __future__ import annotations

from pathlib import Path

from convseg_deploy.errors import ConvSegError
from convseg_deploy.runtime.base import Runner, RunnerInfo

BACKENDS = ("torch", "onnxruntime", "tensorrt")
SUFFIX_BACKEND = {".pt": "torch", ".pth": "torch", ".onnx": "onnxruntime", ".engine": "tensorrt", ".plan": "tensorrt"}

__all__ = ["BACKENDS", "Runner", "RunnerInfo", "backend_for", "make_runner"]


def backend_for(path: str | Path) -> str:
    """The backend that runs a model file, from its suffix."""
    suffix = Path(path).suffix.lower()
    if suffix not in SUFFIX_BACKEND:
        raise ConvSegError(f"{path} is not a model file this tool runs: expected .pt (PyTorch), .onnx or .engine")
    return SUFFIX_BACKEND[suffix]


def make_runner(path: str | Path, backend: str | None = None, provider: str = "cpu", *,
                threads: int | None = None, precision: str = "fp32", device: int = 0) -> Runner:
    """A runner for ``path``; ``backend`` defaults to the one its suffix implies; ``device``: the CUDA device."""
    backend = backend or backend_for(path)
    if backend == "torch":
        from convseg_deploy.runtime.torch_runner import TorchRunner

        return TorchRunner(path, device=f"cuda:{device}" if provider == "cuda" else "cpu", precision=precision,
                           threads=threads)
    if backend == "onnxruntime":
        from convseg_deploy.runtime.onnxruntime_runner import OnnxRuntimeRunner

        return OnnxRuntimeRunner(path, provider=provider, threads=threads, device=device)
    if backend == "tensorrt":
        from convseg_deploy.runtime.tensorrt_runner import TensorRTRunner

        return TensorRTRunner(path, device=device)
    raise ConvSegError(f"unknown backend {backend!r}: use one of {', '.join(BACKENDS)}")
