"""OpenVINO backend: our ONNX files as they are, on an Intel CPU, GPU or NPU.

OpenVINO reads the ONNX file itself (no separate IR file to ship) and compiles it for the device;
its model cache (``CACHE_DIR``) keeps the compiled blob, so the second start of the same file,
shape and settings skips compilation. The inference precision is an explicit choice: ``f32``
(exact, the default) or ``bf16``/``f16`` (lossy, faster where the hardware has it; a bench row
gated by mask agreement like any other precision, never switched on silently). OpenVINO's own
default on CPUs with AMX is bf16, so ``f32`` is always passed explicitly.

The model is reshaped to a static batch per batch size and compiled once per size: static
shapes are what OpenVINO's CPU plugin runs fastest. ``stream`` keeps several infer requests in
flight (``AsyncInferQueue``) for the throughput row. openvino is imported in ``activate`` only.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from convseg_deploy.artifacts.names import OPENVINO_INSTALL_HINT
from convseg_deploy.errors import ConvSegError, MissingDependencyError, shorten
from convseg_deploy.runtime.base import Runner, RunnerInfo

DEVICES = {"cpu": "CPU", "gpu": "GPU", "npu": "NPU"}
HINTS = {"latency": "LATENCY", "throughput": "THROUGHPUT"}
# Inference precision -> the OPTIMIZATION_CAPABILITIES entry a device lists when it runs it natively.
INFERENCE_PRECISIONS = {"f32": "FP32", "bf16": "BF16", "f16": "FP16"}
CACHE_ENV = "CONVSEG_OPENVINO_CACHE"  # "" turns the model cache off


def default_cache_dir() -> Path | None:
    """$CONVSEG_OPENVINO_CACHE, else ~/.cache/convseg-deploy/openvino; None when set to ''."""
    value = os.environ.get(CACHE_ENV)
    if value is not None:
        return Path(value) if value else None
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "convseg-deploy" / "openvino"


def import_openvino() -> Any:
    """The ``openvino`` module, or a one-line MissingDependencyError saying how to get it."""
    try:
        import openvino
    except (ImportError, OSError) as exc:
        raise MissingDependencyError(f"OpenVINO is not installed ({exc}): {OPENVINO_INSTALL_HINT}") from None
    return openvino


def device_capabilities(core: Any, name: str) -> list[str]:
    """What device ``name`` computes natively (its OPTIMIZATION_CAPABILITIES); [] where it cannot tell.

    On x86 CPUs, BF16 is kept only where the CPU probe sees AVX512-BF16 or AMX: OpenVINO's list
    comes from CPUID even when ``ONEDNN_MAX_CPU_ISA`` caps its kernels below bf16, and under such
    a cap a bf16 hint fails to compile (OpenVINO 2026.4) instead of running. The probe honours
    ``CONVSEG_MAX_CPU_ISA``, set next to it by ``make test``'s weakest-ISA pass.
    """
    try:
        caps = [str(c) for c in core.get_property(name, "OPTIMIZATION_CAPABILITIES")]
    except Exception:  # noqa: BLE001 - a device without the property: assume nothing
        return []
    if name == "CPU":
        from convseg_deploy.hardware.cpu import this_cpu

        cpu = this_cpu()
        if cpu.get("vendor") in ("GenuineIntel", "AuthenticAMD") and cpu.get("flags_known") and not cpu.get("bf16"):
            caps = [c for c in caps if c != "BF16"]
    return caps


def precision_label(file_precision: str, inference: str) -> str:
    """What a row computes in: the file's precision with f32 inference, else the inference precision
    (``fp32`` file with bf16 inference -> ``bf16``; an int8 file -> ``int8+bf16``)."""
    if inference == "f32":
        return file_precision
    name = {"bf16": "bf16", "f16": "fp16"}[inference]
    return name if file_precision == "fp32" else f"{file_precision}+{name}"


class OpenVinoRunner(Runner):
    """Runs ``model.<precision>.onnx`` with OpenVINO on one device."""

    def __init__(self, onnx_path: str | Path, device: str = "cpu", *, hint: str = "latency",
                 inference_precision: str = "f32", threads: int | None = None,
                 cache_dir: str | Path | None | bool = True) -> None:
        for value, allowed, what in ((device, DEVICES, "device"), (hint, HINTS, "performance hint"),
                                     (inference_precision, INFERENCE_PRECISIONS, "inference precision")):
            if value not in allowed:
                raise ConvSegError(f"unknown OpenVINO {what} {value!r}: use one of {', '.join(allowed)}")
        self.path, self.device, self.hint = Path(onnx_path), device, hint
        self.inference_precision, self.threads = inference_precision, threads
        self.cache_dir = default_cache_dir() if cache_dir is True else (Path(cache_dir) if cache_dir else None)
        self.core: Any = None
        self.model: Any = None
        self.compiled: dict[int, Any] = {}  # batch size -> (compiled model, infer request)
        self._max_batch: int | None = None

    def activate(self) -> None:
        from convseg_deploy.artifacts.onnx_meta import preprocess_from_metadata, read_metadata

        ov = import_openvino()
        meta = read_metadata(self.path)
        self.preprocess, self.threshold = preprocess_from_metadata(meta, str(self.path))
        self.core = ov.Core()
        name = DEVICES[self.device]
        listed = list(self.core.available_devices)
        if not any(d.split(".")[0] == name for d in listed):
            raise MissingDependencyError(f"OpenVINO sees no {name} device here (it lists {', '.join(listed) or 'none'})")
        if self.inference_precision != "f32":
            caps = self._capabilities(name)
            wanted = INFERENCE_PRECISIONS[self.inference_precision]
            if wanted not in caps:
                raise MissingDependencyError(
                    f"this {name} has no native {self.inference_precision} (OpenVINO lists {', '.join(caps) or 'nothing'}); "
                    + ("it needs AMX or AVX512-BF16" if wanted == "BF16" else "use f32"))
        try:
            self.model = self.core.read_model(str(self.path))
        except Exception as exc:  # noqa: BLE001 - OpenVINO raises RuntimeError subclasses of its own
            raise ConvSegError(f"OpenVINO cannot read {self.path}: {_first_line(exc)}") from None
        batch_dim = self.model.inputs[0].get_partial_shape()[0]
        # The file's static batch is honoured (OpenVINO could reshape it, but predict and bench must
        # run the model as exported, like every other backend).
        self._max_batch = batch_dim.get_length() if batch_dim.is_static else None
        file_precision = str(meta.get("precision", "fp32"))
        self.info = RunnerInfo("openvino", self.device, precision_label(file_precision, self.inference_precision),
                               str(self.path), {"openvino": ov.__version__, "device": name, "hint": self.hint,
                                                "inference_precision": self.inference_precision})
        self._compiled_for(1)  # compile errors surface at activation, where they fail the row

    def max_batch(self) -> int | None:
        return self._max_batch

    def _capabilities(self, name: str) -> list[str]:
        return device_capabilities(self.core, name)

    def _config(self) -> dict[str, Any]:
        config: dict[str, Any] = {"PERFORMANCE_HINT": HINTS[self.hint],
                                  "INFERENCE_PRECISION_HINT": self.inference_precision}
        if self.threads and self.device == "cpu":
            config["INFERENCE_NUM_THREADS"] = int(self.threads)
        if self.cache_dir is not None:
            config["CACHE_DIR"] = str(self.cache_dir)
        return config

    def _compiled_for(self, batch_size: int) -> tuple[Any, Any]:
        """The compiled model and an infer request for a static batch of ``batch_size``."""
        if batch_size not in self.compiled:
            h, w = self.preprocess.size
            model = self.model.clone()
            start = time.perf_counter()
            try:
                model.reshape({model.inputs[0].get_any_name(): [batch_size, 3, h, w]})
                compiled = self.core.compile_model(model, DEVICES[self.device], self._config())
            except Exception as exc:  # noqa: BLE001
                raise ConvSegError(f"OpenVINO cannot compile {self.path.name} for {DEVICES[self.device]} "
                                   f"(batch {batch_size}, {self.inference_precision}): {_first_line(exc)}") from None
            self.info.extra.setdefault("compile_s", {})[batch_size] = round(time.perf_counter() - start, 3)
            self._check_precision(compiled)
            self.compiled[batch_size] = (compiled, compiled.create_infer_request())
        return self.compiled[batch_size]

    def _check_precision(self, compiled: Any) -> None:
        """Refuse a device that quietly computes in another precision than the one asked for
        (the CPU plugin answers an f16 hint with f32 where it lacks FP16 arithmetic)."""
        try:
            effective = str(compiled.get_property("INFERENCE_PRECISION_HINT").to_string())
        except Exception:  # noqa: BLE001 - devices without the property: trust the hint
            return
        self.info.extra["effective_precision"] = effective
        if effective not in ("undefined", self.inference_precision):
            raise MissingDependencyError(f"OpenVINO's {DEVICES[self.device]} runs {effective} where "
                                         f"{self.inference_precision} was asked for: not supported on this device")

    def infer(self, batch: np.ndarray) -> np.ndarray:
        assert self.model is not None, "activate() the runner first"
        _, request = self._compiled_for(int(batch.shape[0]))
        try:
            request.infer({0: np.ascontiguousarray(batch, dtype=np.float32)})
        except Exception as exc:  # noqa: BLE001
            raise ConvSegError(f"{self.path.name}: OpenVINO inference on a {tuple(batch.shape)} batch failed: "
                               f"{_first_line(exc)}") from None
        return np.array(request.get_output_tensor(0).data, dtype=np.float32)  # a copy: the request reuses its buffer

    def stream(self, batch: np.ndarray, count: int, requests: int | None = None) -> tuple[float, np.ndarray, int]:
        """Run ``batch`` ``count`` times with up to ``requests`` infer requests in flight [the device's
        optimal number]: (wall seconds, per-request latencies in seconds, requests used)."""
        ov = import_openvino()
        compiled, _ = self._compiled_for(int(batch.shape[0]))
        jobs = requests or int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
        queue = ov.AsyncInferQueue(compiled, jobs)
        latencies = np.zeros(count, dtype=np.float64)
        errors: list[str] = []

        def done(request: Any, userdata: tuple[int, float]) -> None:
            index, started = userdata
            latencies[index] = time.perf_counter() - started

        queue.set_callback(done)
        data = {0: np.ascontiguousarray(batch, dtype=np.float32)}
        start = time.perf_counter()
        try:
            for i in range(count):
                queue.start_async(data, (i, time.perf_counter()))  # blocks while every request is busy
            queue.wait_all()
        except Exception as exc:  # noqa: BLE001
            errors.append(_first_line(exc))
        wall = time.perf_counter() - start
        if errors:
            raise ConvSegError(f"{self.path.name}: OpenVINO async inference failed: {errors[0]}")
        return wall, latencies, jobs

    def deactivate(self) -> None:
        self.compiled.clear()
        self.model = self.core = None


def _first_line(exc: BaseException) -> str:
    """OpenVINO's message without its "Exception from src/...cpp:NN:" source-location lines, on
    one line and cut in the middle (``errors.shorten``) so that its cause at the end is kept."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    told = [line for line in lines if not line.startswith("Exception from ")]
    return shorten(" ".join(told or lines) or type(exc).__name__)
