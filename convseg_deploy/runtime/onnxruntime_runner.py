"""ONNX Runtime backend: any exported ONNX file on the CPU, CUDA or TensorRT execution provider.

The preprocessing spec and threshold come from the file's own metadata. onnxruntime is
imported in ``activate`` only, so merely listing runners never loads it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from convseg_deploy.errors import ConvSegError, MissingDependencyError, shorten
from convseg_deploy.ort_session import session_options
from convseg_deploy.runtime.base import Runner, RunnerInfo

PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}


def available_providers() -> list[str]:
    """Our short names of the providers this onnxruntime build lists (not proof that they load)."""
    import onnxruntime as ort

    listed = set(ort.get_available_providers())
    return [short for short, name in PROVIDERS.items() if name in listed]


class OnnxRuntimeRunner(Runner):
    """Runs ``model.<precision>.onnx`` with one execution provider."""

    def __init__(self, onnx_path: str | Path, provider: str = "cpu", threads: int | None = None, device: int = 0,
                 spin: bool = True) -> None:
        if provider not in PROVIDERS:
            raise ConvSegError(f"unknown ONNX Runtime provider {provider!r}: use one of {', '.join(PROVIDERS)}")
        self.path, self.provider, self.threads, self.device = Path(onnx_path), provider, threads, device
        self.spin = spin  # ort_session.session_options
        self.session = None
        self._max_batch: int | None = None

    def activate(self) -> None:
        import onnxruntime as ort

        from convseg_deploy.artifacts.onnx_meta import preprocess_from_metadata, read_metadata

        meta = read_metadata(self.path)
        self.preprocess, self.threshold = preprocess_from_metadata(meta, str(self.path))
        name = PROVIDERS[self.provider]
        if name not in ort.get_available_providers():
            raise MissingDependencyError(f"this onnxruntime build has no {name}: it lists {', '.join(ort.get_available_providers())}")
        providers: list = [name] if self.provider == "cpu" else [(name, {"device_id": self.device}), "CPUExecutionProvider"]
        try:
            self.session = ort.InferenceSession(str(self.path), sess_options=session_options(self.threads, spin=self.spin),
                                                providers=providers)
        except Exception as exc:  # noqa: BLE001 - ORT raises its own exception hierarchy
            raise ConvSegError(f"ONNX Runtime cannot load {self.path}: {shorten(str(exc))}") from None
        if self.session.get_providers()[0] != name:
            # ORT falls back to the CPU silently when a GPU provider's libraries are missing
            from convseg_deploy.hardware.gpu import gpu_expected

            self.session = None
            why = f"{name} is listed but did not load (CUDA/cuDNN or TensorRT libraries missing?)"
            if gpu_expected():  # a GPU machine whose provider is broken: a failure, not an absence
                raise ConvSegError(f"{why}: check them with 'convseg-deploy doctor'")
            raise MissingDependencyError(f"{why}; this machine has no NVIDIA GPU")
        self.input_name = self.session.get_inputs()[0].name
        batch_dim = self.session.get_inputs()[0].shape[0]
        self._max_batch = batch_dim if isinstance(batch_dim, int) and batch_dim > 0 else None  # a static batch
        self.output_name = self.session.get_outputs()[0].name
        self.info = RunnerInfo("onnxruntime", self.provider, str(meta.get("precision", "fp32")), str(self.path),
                               {"onnxruntime": ort.__version__})

    def infer(self, batch: np.ndarray) -> np.ndarray:
        assert self.session is not None, "activate() the runner first"
        try:
            (out,) = self.session.run([self.output_name], {self.input_name: np.ascontiguousarray(batch, dtype=np.float32)})
        except Exception as exc:  # noqa: BLE001
            reason = shorten(str(exc))
            raise ConvSegError(f"{self.path.name}: inference on a {tuple(batch.shape)} batch failed: {reason}") from None
        return np.asarray(out, dtype=np.float32)

    def max_batch(self) -> int | None:
        return self._max_batch

    def deactivate(self) -> None:
        self.session = None
