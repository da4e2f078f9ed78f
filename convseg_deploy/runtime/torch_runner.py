"""PyTorch backend: a checkpoint (or an in-memory model) on CPU or CUDA: FP32, FP16 autocast on
CUDA, BF16 autocast on CPUs that have BF16 in hardware (AMX or AVX512-BF16; elsewhere it would be
emulated and slower than FP32, so it is refused as missing hardware). Channels-last memory
format by default: oneDNN's fast convolutions want it, and it is what a PyTorch user would try."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from convseg_deploy.errors import ConvSegError, MissingDependencyError
from convseg_deploy.runtime.base import Runner, RunnerInfo


# precision -> (autocast device type, dtype name); None: no autocast
AUTOCAST: dict[str, tuple[str, str] | None] = {"fp32": None, "fp16": ("cuda", "float16"), "bf16": ("cpu", "bfloat16")}


def resolve_device(device: str) -> str:
    """'auto' -> 'cuda' when a CUDA GPU is usable, else 'cpu'; explicit CUDA is checked."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        from convseg_deploy.hardware.gpu import gpu_expected

        if torch.version.cuda and gpu_expected():  # a CUDA build on a machine with an NVIDIA driver: broken, not absent
            raise ConvSegError(f"PyTorch {torch.__version__} (CUDA {torch.version.cuda}) cannot use the GPU of this machine: "
                               "check the driver with nvidia-smi")
        raise MissingDependencyError(f"device {device!r} asked for, but PyTorch sees no CUDA GPU here: use --device cpu")
    if device != "cpu" and not device.startswith("cuda"):
        raise ConvSegError(f"unknown device {device!r}: use auto, cpu or cuda[:N]")
    return device


class TorchRunner(Runner):
    """Eager PyTorch inference. ``precision`` fp16: autocast on CUDA; bf16: autocast on the CPU."""

    def __init__(self, checkpoint: str | Path | None = None, *, model: Any = None, device: str = "cpu",
                 precision: str = "fp32", channels_last: bool = True, threads: int | None = None) -> None:
        if (checkpoint is None) == (model is None):
            raise ValueError("give exactly one of checkpoint or model")
        if precision not in AUTOCAST:
            raise ConvSegError(f"PyTorch runs fp32, fp16 (CUDA autocast) or bf16 (CPU autocast), not {precision!r}")
        self.checkpoint, self.model = checkpoint, model
        self.device_name, self.precision = device, precision
        self.channels_last, self.threads = channels_last, threads
        self._events: tuple[Any, Any] | None = None
        self._timed = False

    def activate(self) -> None:
        import torch

        from convseg_deploy.checkpoint import load_model

        self.device = resolve_device(self.device_name)
        if self.precision == "fp16" and self.device == "cpu":
            raise MissingDependencyError("PyTorch FP16 autocast needs a CUDA GPU; on the CPU use fp32")
        if self.threads is not None and self.threads < 1:
            raise ConvSegError(f"thread count must be at least 1, got {self.threads}")
        if self.precision == "bf16":
            from convseg_deploy.hardware.cpu import this_cpu

            if not self.device == "cpu":
                raise ConvSegError("PyTorch bf16 autocast is offered on the CPU; on CUDA use fp16")
            if not this_cpu()["bf16"]:
                raise MissingDependencyError("this CPU has no BF16 instructions (AMX or AVX512-BF16): "
                                             "PyTorch would emulate bf16, slower than fp32")
        if self.threads:
            torch.set_num_threads(self.threads)
        if self.model is None:
            self.model = load_model(self.checkpoint)
        self.model = self.model.to(self.device).eval()
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.preprocess, self.threshold = self.model.preprocess, self.model.threshold
        provider = "cuda" if self.device.startswith("cuda") else "cpu"
        self.info = RunnerInfo("torch", provider, self.precision, str(self.checkpoint or "<in-memory model>"))
        self._events = (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) \
            if provider == "cuda" else None
        self._timed = False
        self.reset_peak_memory()

    def infer(self, batch: np.ndarray) -> np.ndarray:
        import torch

        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self.device, non_blocking=True)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if self._events is not None:
            self._events[0].record()
        device_type, dtype = AUTOCAST[self.precision] or ("cpu", None)
        with torch.inference_mode(), torch.autocast(device_type, dtype=dtype and getattr(torch, dtype),
                                                    enabled=dtype is not None):
            y = self.model(x)
        if self._events is not None:
            self._events[1].record()
            self._timed = True
        return y.float().cpu().numpy()

    def device_time_ms(self) -> float | None:
        """GPU time of the last forward pass, from CUDA events around it (the copy back synchronised)."""
        if self._events is None or not self._timed:
            return None
        self._events[1].synchronize()
        return float(self._events[0].elapsed_time(self._events[1]))

    def reset_peak_memory(self) -> None:
        import torch

        if self.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats(self.device)

    def synchronize(self) -> None:
        import torch

        if self.device.startswith("cuda"):
            torch.cuda.synchronize(self.device)

    def peak_memory_mb(self) -> float | None:
        import torch

        if self.device.startswith("cuda"):
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        return None

    def deactivate(self) -> None:
        if self.checkpoint is not None:
            self.model = None
