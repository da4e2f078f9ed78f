"""Run a TensorRT engine through the named-tensor API of TensorRT 10.x and 11.x.

The engine's sidecar gives the preprocessing spec, the threshold and the precision, and says
where the engine may run (TensorRT build, CUDA, CPU architecture, OS, GPU); a mismatch is
reported before deserialising, with the command that rebuilds it. Buffers live in pycuda device
memory and are reused across calls, grown when a larger batch arrives. The binding-index API
(``execute_async_v2``, ``get_binding_shape``, ``num_bindings``) is gone since TensorRT 10 and
never used here.

Threads: a CUDA context is current per thread, so the device's primary context is made current
around every call (load, infer, synchronize, release) on the calling thread and popped after, as
Polygraphy does; one lock serialises the execution context and the shared buffers, so one runner
may be used from a server's thread pool.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import numpy as np

from convseg_deploy.hardware.gpu import PrimaryContext, engine_target, import_pycuda, import_tensorrt
from convseg_deploy.artifacts.names import INPUT_NAME
from convseg_deploy.artifacts.onnx_meta import preprocess_from_metadata
from convseg_deploy.artifacts.sidecar import check_engine_compat, read_sidecar, rebuild_command, sidecar_path
from convseg_deploy.errors import ConvSegError
from convseg_deploy.runtime.base import Runner, RunnerInfo


class TensorRTRunner(Runner):
    """Runs ``FILE.engine`` (with its ``FILE.engine.json`` sidecar) on CUDA device ``device``.

    use_cuda_graph: reserved for replaying the enqueue as a CUDA graph; not implemented yet, so
        asking for it raises instead of silently running without it.
    """

    def __init__(self, engine_path: str | os.PathLike, use_cuda_graph: bool = False, device: int = 0) -> None:
        self.engine_path = Path(engine_path)
        self.use_cuda_graph = use_cuda_graph
        self.device = device
        self.info = RunnerInfo(backend="tensorrt", provider="tensorrt", precision="unknown", artifact=str(self.engine_path))
        self._lock = threading.RLock()
        self._cuda: Any = None
        self._gpu: PrimaryContext | None = None
        self._events: tuple[Any, Any] | None = None
        self._device_ms: float | None = None
        self._rebuild = ""
        self._runtime: Any = None
        self._engine: Any = None
        self._context: Any = None
        self._stream: Any = None
        self._output_name = ""
        self._dtypes: dict[str, np.dtype] = {}
        self._profile_min: tuple[int, ...] = ()
        self._profile_max: tuple[int, ...] = ()
        self._device: dict[str, tuple[Any, int]] = {}  # name -> (allocation, capacity in bytes)
        self._host: dict[str, np.ndarray] = {}  # name -> flat page-locked staging buffer

    def activate(self) -> None:
        if self.use_cuda_graph:
            # TODO: capture set_tensor_address + execute_async_v3 per input shape and replay it.
            raise ConvSegError("CUDA graph replay is not implemented for TensorRT engines yet: run without it")
        if not self.engine_path.is_file():
            raise ConvSegError(f"engine file {self.engine_path} not found: build it with 'convseg-deploy build-engine'")
        sidecar = read_sidecar(self.engine_path)
        self.preprocess, self.threshold = preprocess_from_metadata(sidecar, str(sidecar_path(self.engine_path)))
        self._rebuild = rebuild_command(sidecar)
        trt = import_tensorrt()
        cuda = import_pycuda()
        gpu = PrimaryContext(cuda, self.device)  # fails (or skips: no GPU at all) before anything is loaded
        here = engine_target(str(trt.__version__), self.device)
        problem = check_engine_compat(sidecar, here or {})
        if problem:
            gpu.release()
            raise ConvSegError(problem)
        self._cuda, self._gpu = cuda, gpu
        try:
            with self._lock, gpu:
                self._load(trt, sidecar)
        except BaseException:
            self.deactivate()
            raise

    def _load(self, trt: Any, sidecar: dict[str, Any]) -> None:
        logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(logger)
        dla_core = sidecar.get("dla_core")
        if dla_core is not None:
            cores = int(self._runtime.num_DLA_cores)
            if not 0 <= int(dla_core) < cores:
                raise ConvSegError(f"engine {self.engine_path} runs on DLA core {dla_core}, and this device has {cores} "
                                   f"DLA core(s): rebuild it for the GPU with '{self._rebuild.split(' --dla-core')[0]}'")
            self._runtime.DLA_core = int(dla_core)
        if sidecar.get("version_compatible"):
            self._runtime.engine_host_code_allowed = True  # the plan embeds the lean runtime it needs
        self._engine = self._runtime.deserialize_cuda_engine(self.engine_path.read_bytes())
        if self._engine is None:
            raise ConvSegError(
                f"TensorRT {trt.__version__} could not load engine {self.engine_path} (corrupt, or not built by this "
                f"TensorRT): rebuild it here with '{self._rebuild}'"
            )
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        inputs = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if inputs != [INPUT_NAME] or len(outputs) != 1:
            raise ConvSegError(
                f"engine {self.engine_path} has inputs {inputs} and outputs {outputs}, expected one input "
                f"'{INPUT_NAME}' and one output: build it from a 'convseg-deploy export' ONNX"
            )
        self._output_name = outputs[0]
        self._dtypes = {n: np.dtype(trt.nptype(self._engine.get_tensor_dtype(n))) for n in names}
        low, _, high = self._engine.get_tensor_profile_shape(INPUT_NAME, 0)
        self._profile_min, self._profile_max = tuple(int(d) for d in low), tuple(int(d) for d in high)
        self._context = self._engine.create_execution_context()
        if self._context is None:
            raise ConvSegError(f"TensorRT could not create an execution context for {self.engine_path}: is the GPU out of memory?")
        self._stream = self._cuda.Stream()
        self._events = (self._cuda.Event(), self._cuda.Event())
        self.info = RunnerInfo(
            backend="tensorrt",
            provider="tensorrt",
            precision=str(sidecar.get("precision", "unknown")),
            artifact=str(self.engine_path),
            extra={
                "tensorrt_version": str(trt.__version__),
                "gpu": str(self._gpu.device.name()) if self._gpu else "?",
                "device": self.device,
                "dla_core": dla_core,
                "profile_min": list(self._profile_min),
                "profile_max": list(self._profile_max),
            },
        )

    def _check_shape(self, shape: tuple[int, ...]) -> None:
        if len(shape) != 4 or shape[1] != 3:
            raise ConvSegError(f"expected a preprocessed N x 3 x H x W batch, got shape {shape}")
        n, _, h, w = shape
        low, high = self._profile_min, self._profile_max
        if n > high[0]:
            raise ConvSegError(f"batch {n} exceeds the engine's profile (max {high[0]}): rebuild with --max-batch {n}")
        if n < low[0]:
            raise ConvSegError(f"batch {n} is below the engine's profile (min {low[0]}): rebuild with --min-batch {n}")
        if not (low[2] <= h <= high[2] and low[3] <= w <= high[3]):
            raise ConvSegError(
                f"image size {h}x{w} is outside the engine's profile ({low[2]}x{low[3]} to {high[2]}x{high[3]}): "
                "preprocess to the sidecar's size or rebuild with --min-size/--max-size"
            )

    def _buffers(self, name: str, shape: tuple[int, ...]) -> tuple[Any, np.ndarray]:
        """Device allocation and page-locked host view for ``name``, grown when too small."""
        dtype = self._dtypes[name]
        count = int(np.prod(shape))
        nbytes = count * dtype.itemsize
        alloc, capacity = self._device.get(name, (None, 0))
        if nbytes > capacity:
            if alloc is not None:
                alloc.free()
                del self._device[name]
            alloc = self._cuda.mem_alloc(nbytes)
            self._device[name] = (alloc, nbytes)
            self._host[name] = self._cuda.pagelocked_empty(count, dtype)
        return alloc, self._host[name][:count].reshape(shape)

    def infer(self, batch: np.ndarray) -> np.ndarray:
        if self._context is None or self._gpu is None:
            raise ConvSegError("the TensorRT runner is not active: use it in a 'with' block or call activate() first")
        batch = np.asarray(batch)
        self._check_shape(tuple(batch.shape))
        with self._lock, self._gpu:  # this thread's CUDA context, and the execution context to itself
            return self._infer(batch)

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        context, cuda, out_name, stream = self._context, self._cuda, self._output_name, self._stream
        if not context.set_input_shape(INPUT_NAME, tuple(batch.shape)):
            raise ConvSegError(f"TensorRT rejected input shape {tuple(batch.shape)} for {self.engine_path}: see its log above")
        out_shape = tuple(int(d) for d in context.get_tensor_shape(out_name))
        in_device, in_host = self._buffers(INPUT_NAME, tuple(batch.shape))
        out_device, out_host = self._buffers(out_name, out_shape)
        np.copyto(in_host, batch, casting="same_kind")  # into pinned memory, so the copy is truly async
        # Addresses are set on every call because a grown buffer moves.
        for name, alloc in ((INPUT_NAME, in_device), (out_name, out_device)):
            if not context.set_tensor_address(name, int(alloc)):
                raise ConvSegError(f"TensorRT rejected the device address of tensor '{name}' of {self.engine_path}: "
                                   "see its log above")
        start, end = self._events  # type: ignore[misc]
        cuda.memcpy_htod_async(in_device, in_host, stream)
        start.record(stream)
        if not context.execute_async_v3(stream.handle):
            raise ConvSegError(f"TensorRT failed to run {self.engine_path}: see its log above")
        end.record(stream)
        cuda.memcpy_dtoh_async(out_host, out_device, stream)
        stream.synchronize()
        self._device_ms = float(start.time_till(end))
        return out_host.astype(np.float32)  # a copy: the staging buffer is reused by the next call

    def max_batch(self) -> int | None:
        return self._profile_max[0] if self._profile_max else None

    def synchronize(self) -> None:
        if self._stream is not None and self._gpu is not None:
            with self._lock, self._gpu:
                self._stream.synchronize()

    def device_time_ms(self) -> float | None:
        """GPU time of the last ``infer``'s engine execution, from CUDA events around it."""
        return self._device_ms

    def deactivate(self) -> None:
        gpu, self._gpu = self._gpu, None
        if gpu is None:
            return
        with self._lock, gpu:
            for alloc, _ in self._device.values():
                alloc.free()
            self._device.clear()
            self._host.clear()
            # TensorRT objects go (context before engine before runtime) while the CUDA context is current.
            self._context = self._engine = self._runtime = None
            self._stream = self._events = None
        gpu.release()
