"""Run a TensorRT engine through the named-tensor API of TensorRT 10.x and 11.x.

The engine's sidecar gives the preprocessing spec, the threshold and the precision, and says
which TensorRT version and GPU built it; a mismatch is reported before deserialising, with the
fix (rebuild on this device). Buffers live in pycuda device memory and are reused across calls,
grown when a larger batch arrives. The binding-index API (``execute_async_v2``,
``get_binding_shape``, ``num_bindings``) is gone since TensorRT 10 and never used here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from convseg_deploy.errors import ConvSegError, MissingDependencyError
from convseg_deploy.runtime.base import Runner, RunnerInfo
from convseg_deploy.artifacts.onnx_meta import preprocess_from_metadata
from convseg_deploy.artifacts.device import import_tensorrt
from convseg_deploy.artifacts.names import INPUT_NAME, REBUILD_HINT, TENSORRT_INSTALL_HINT
from convseg_deploy.artifacts.sidecar import check_engine_compat, read_sidecar, sidecar_path


def _import_pycuda() -> Any:
    try:
        import pycuda.driver as cuda
    except (ImportError, OSError) as exc:
        raise MissingDependencyError(
            f"pycuda is not installed ({exc}): {TENSORRT_INSTALL_HINT} on the GPU machine (it builds against the CUDA toolkit)"
        ) from None
    return cuda


class TensorRTRunner(Runner):
    """Runs ``FILE.engine`` (with its ``FILE.engine.json`` sidecar) on CUDA device 0.

    use_cuda_graph: reserved for replaying the enqueue as a CUDA graph; not implemented yet, so
        asking for it raises instead of silently running without it.
    """

    def __init__(self, engine_path: str | os.PathLike, use_cuda_graph: bool = False) -> None:
        self.engine_path = Path(engine_path)
        self.use_cuda_graph = use_cuda_graph
        self.info = RunnerInfo(backend="tensorrt", provider="tensorrt", precision="unknown", artifact=str(self.engine_path))
        self._cuda: Any = None
        self._cuda_context: Any = None
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
        trt = import_tensorrt()
        cuda = _import_pycuda()
        try:
            cuda.init()
            device = cuda.Device(0)
            major, minor = device.compute_capability()
        except Exception as exc:  # noqa: BLE001 - pycuda.driver.Error and friends
            raise MissingDependencyError(f"no CUDA GPU found ({exc}): TensorRT engines need the GPU they were built for") from None
        problem = check_engine_compat(sidecar, trt.__version__, f"{major}.{minor}")
        if problem:
            raise ConvSegError(problem)
        self._cuda = cuda
        # The primary context is the one the CUDA runtime (and so TensorRT and torch) uses too.
        self._cuda_context = device.retain_primary_context()
        self._cuda_context.push()
        try:
            self._load(trt, sidecar, device)
        except BaseException:
            self.deactivate()
            raise

    def _load(self, trt: Any, sidecar: dict[str, Any], device: Any) -> None:
        logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(logger)
        self._engine = self._runtime.deserialize_cuda_engine(self.engine_path.read_bytes())
        if self._engine is None:
            raise ConvSegError(
                f"TensorRT {trt.__version__} could not load engine {self.engine_path} (corrupt, or not built by this "
                f"TensorRT): {REBUILD_HINT}"
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
        self.info = RunnerInfo(
            backend="tensorrt",
            provider="tensorrt",
            precision=str(sidecar.get("precision", "unknown")),
            artifact=str(self.engine_path),
            extra={
                "tensorrt_version": str(trt.__version__),
                "gpu": str(device.name()),
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
        if self._context is None:
            raise ConvSegError("the TensorRT runner is not active: use it in a 'with' block or call activate() first")
        batch = np.asarray(batch)
        self._check_shape(tuple(batch.shape))
        context, cuda, out_name = self._context, self._cuda, self._output_name
        if not context.set_input_shape(INPUT_NAME, tuple(batch.shape)):
            raise ConvSegError(f"TensorRT rejected input shape {tuple(batch.shape)} for {self.engine_path}: see its log above")
        out_shape = tuple(int(d) for d in context.get_tensor_shape(out_name))
        in_device, in_host = self._buffers(INPUT_NAME, tuple(batch.shape))
        out_device, out_host = self._buffers(out_name, out_shape)
        np.copyto(in_host, batch, casting="same_kind")  # into pinned memory, so the copy is truly async
        # Addresses are set on every call because a grown buffer moves.
        context.set_tensor_address(INPUT_NAME, int(in_device))
        context.set_tensor_address(out_name, int(out_device))
        cuda.memcpy_htod_async(in_device, in_host, self._stream)
        if not context.execute_async_v3(self._stream.handle):
            raise ConvSegError(f"TensorRT failed to run {self.engine_path}: see its log above")
        cuda.memcpy_dtoh_async(out_host, out_device, self._stream)
        self._stream.synchronize()
        return out_host.astype(np.float32)  # a copy: the staging buffer is reused by the next call

    def max_batch(self) -> int | None:
        return self._profile_max[0] if self._profile_max else None

    def synchronize(self) -> None:
        if self._stream is not None:
            self._stream.synchronize()

    def deactivate(self) -> None:
        for alloc, _ in self._device.values():
            alloc.free()
        self._device.clear()
        self._host.clear()
        # Release TensorRT objects (context before engine before runtime) while the CUDA context is current.
        self._context = self._engine = self._runtime = None
        self._stream = None
        if self._cuda_context is not None:
            self._cuda_context.pop()
            self._cuda_context.detach()
            self._cuda_context = None
