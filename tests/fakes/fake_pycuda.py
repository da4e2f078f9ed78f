"""A numpy-backed test double of ``pycuda`` (``pycuda``, ``pycuda.driver``, ``pycuda.autoinit``).

Device memory is a dict of bytearrays keyed by fake addresses (``HEAP``), shared with the fake
TensorRT execution context so that a copy in, an ``execute_async_v3`` and a copy out really move
data. Every call is recorded in ``driver.calls``. Using freed or unknown memory raises at once.
"""

from __future__ import annotations

import itertools
import types
from typing import Any

import numpy as np

GPU = tuple[str, tuple[int, int]]
DEFAULT_GPU: GPU = ("NVIDIA H100", (9, 0))


class FakeHeap:
    """Fake device memory: base address -> bytes."""

    def __init__(self) -> None:
        self.blocks: dict[int, bytearray] = {}
        self._next = itertools.count(0x7F00_0000_0000, 1 << 20)

    def alloc(self, nbytes: int) -> int:
        if int(nbytes) <= 0:
            raise ValueError(f"fake cuMemAlloc: bad size {nbytes}")
        addr = next(self._next)
        self.blocks[addr] = bytearray(int(nbytes))
        return addr

    def block(self, addr: int, nbytes: int) -> bytearray:
        if addr not in self.blocks:
            raise RuntimeError(f"fake CUDA: address {addr:#x} is not an allocation (freed or never allocated)")
        block = self.blocks[addr]
        if nbytes > len(block):
            raise RuntimeError(f"fake CUDA: {nbytes} bytes do not fit the {len(block)}-byte allocation at {addr:#x}")
        return block

    def write(self, addr: int, data: np.ndarray) -> None:
        raw = np.ascontiguousarray(data).view(np.uint8).reshape(-1)
        self.block(addr, raw.size)[: raw.size] = raw.tobytes()

    def read(self, addr: int, nbytes: int) -> bytes:
        return bytes(self.block(addr, nbytes)[:nbytes])

    def free(self, addr: int) -> None:
        if self.blocks.pop(addr, None) is None:
            raise RuntimeError(f"fake CUDA: double free of {addr:#x}")


HEAP = FakeHeap()


def make_fake_pycuda(gpu: GPU | None = DEFAULT_GPU) -> dict[str, types.ModuleType]:
    """``{"pycuda": ..., "pycuda.driver": ..., "pycuda.autoinit": ...}`` for ``sys.modules``.

    ``gpu=None`` fakes a machine without a CUDA device: ``driver.init()`` raises ``driver.Error``.
    """
    calls: list[tuple[Any, ...]] = []
    driver = types.ModuleType("pycuda.driver")
    driver.__file__ = __file__
    driver.IS_FAKE = True
    driver.calls = calls
    driver.heap = HEAP

    class Error(Exception):
        pass

    class LogicError(Error):
        pass

    def init(flags: int = 0) -> None:
        calls.append(("init",))
        if gpu is None:
            raise Error("cuInit failed: no CUDA-capable device is detected")

    class Context:
        def __init__(self, device: Device) -> None:
            self.device = device
            self.active = False

        def push(self) -> None:
            calls.append(("context_push",))
            self.active = True

        def pop(self) -> None:
            calls.append(("context_pop",))
            self.active = False

        def detach(self) -> None:
            calls.append(("context_detach",))

        def synchronize(self) -> None:
            calls.append(("context_synchronize",))

    class Device:
        def __init__(self, index: int) -> None:
            if gpu is None or index != 0:
                raise LogicError(f"cuDeviceGet failed: invalid device ordinal {index}")
            self.index = index

        @staticmethod
        def count() -> int:
            return 0 if gpu is None else 1

        def name(self) -> str:
            return gpu[0]  # type: ignore[index]

        def compute_capability(self) -> tuple[int, int]:
            return gpu[1]  # type: ignore[index]

        def total_memory(self) -> int:
            return 80 << 30

        def retain_primary_context(self) -> Context:
            calls.append(("retain_primary_context", self.index))
            return Context(self)

        def make_context(self) -> Context:
            calls.append(("make_context", self.index))
            context = Context(self)
            context.active = True
            return context

    class DeviceAllocation:
        def __init__(self, nbytes: int) -> None:
            self.nbytes = int(nbytes)
            self.address = HEAP.alloc(nbytes)
            self.freed = False

        def __int__(self) -> int:
            if self.freed:
                raise LogicError("fake CUDA: using a freed DeviceAllocation")
            return self.address

        __index__ = __int__

        def free(self) -> None:
            calls.append(("mem_free", self.nbytes))
            if not self.freed:
                HEAP.free(self.address)
                self.freed = True

    class Stream:
        _handles = itertools.count(0x5000)

        def __init__(self, flags: int = 0) -> None:
            calls.append(("stream",))
            self.handle = next(Stream._handles)

        def synchronize(self) -> None:
            calls.append(("stream_synchronize", self.handle))

        def is_done(self) -> bool:
            return True

    def mem_alloc(nbytes: int) -> DeviceAllocation:
        calls.append(("mem_alloc", int(nbytes)))
        return DeviceAllocation(nbytes)

    def pagelocked_empty(shape: Any, dtype: Any, order: str = "C", mem_flags: int = 0) -> np.ndarray:
        calls.append(("pagelocked_empty", tuple(np.atleast_1d(shape)), np.dtype(dtype).name))
        return np.empty(shape, dtype=dtype, order=order)

    def _stream_handle(stream: Any) -> Any:
        return None if stream is None else stream.handle

    def memcpy_htod_async(dest: Any, src: np.ndarray, stream: Any = None) -> None:
        calls.append(("memcpy_htod_async", int(dest), np.asarray(src).nbytes, _stream_handle(stream)))
        HEAP.write(int(dest), np.asarray(src))

    def memcpy_dtoh_async(dest: np.ndarray, src: Any, stream: Any = None) -> None:
        calls.append(("memcpy_dtoh_async", int(src), dest.nbytes, _stream_handle(stream)))
        raw = HEAP.read(int(src), dest.nbytes)
        dest.reshape(-1).view(np.uint8)[:] = np.frombuffer(raw, dtype=np.uint8)

    def memcpy_htod(dest: Any, src: np.ndarray) -> None:
        memcpy_htod_async(dest, src)

    def memcpy_dtoh(dest: np.ndarray, src: Any) -> None:
        memcpy_dtoh_async(dest, src)

    def mem_get_info() -> tuple[int, int]:
        return 70 << 30, 80 << 30

    driver.__dict__.update(
        Error=Error, LogicError=LogicError, init=init, Device=Device, Context=Context,
        DeviceAllocation=DeviceAllocation, Stream=Stream, mem_alloc=mem_alloc, pagelocked_empty=pagelocked_empty,
        memcpy_htod_async=memcpy_htod_async, memcpy_dtoh_async=memcpy_dtoh_async, memcpy_htod=memcpy_htod,
        memcpy_dtoh=memcpy_dtoh, mem_get_info=mem_get_info,
    )

    package = types.ModuleType("pycuda")
    package.__file__ = __file__
    package.__path__ = []  # a package, so that "import pycuda.driver" resolves through sys.modules
    package.IS_FAKE = True
    package.VERSION = (2026, 1)
    package.driver = driver

    autoinit = types.ModuleType("pycuda.autoinit")
    autoinit.__file__ = __file__

    def _autoinit_getattr(name: str) -> Any:
        # Created on first use, like the real module's import-time context, but without side effects
        # for tests that merely install the fakes.
        if name in ("device", "context"):
            init()
            device = Device(0)
            autoinit.device, autoinit.context = device, device.make_context()
            return getattr(autoinit, name)
        raise AttributeError(f"fake pycuda.autoinit has no attribute {name!r}")

    autoinit.__getattr__ = _autoinit_getattr  # type: ignore[attr-defined]
    package.autoinit = autoinit
    return {"pycuda": package, "pycuda.driver": driver, "pycuda.autoinit": autoinit}
