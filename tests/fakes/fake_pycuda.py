"""A numpy-backed test double of ``pycuda`` (``pycuda``, ``pycuda.driver``, ``pycuda.autoinit``).

Device memory is a dict of bytearrays keyed by fake addresses (``HEAP``), shared with the fake
TensorRT execution context so that a copy in, an ``execute_async_v3`` and a copy out really move
data. Every call is recorded in ``driver.calls``. Using freed or unknown memory raises at once.

Strict where the real thing is, so that code that only works by luck fails here:
- a CUDA context is current per thread (a stack per thread, as in the driver): every call that
  needs one (allocations, copies, streams, events) raises ``LogicError`` ("no currently active
  context") on a thread that has not pushed one;
- asynchronous work (``memcpy_*_async``, TensorRT's ``execute_async_v3``, event records) is queued
  on its stream and runs only at ``Stream.synchronize`` / ``Context.synchronize``: reading a
  result without synchronising reads stale memory, as on a GPU;
- several GPUs can be faked (``make_fake_pycuda([gpu0, gpu1])``); device ordinals are checked.
"""

from __future__ import annotations

import itertools
import threading
import time
import types
from collections.abc import Callable
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
_THREAD = threading.local()  # .stack: this thread's CUDA context stack
STREAMS: dict[int, Any] = {}  # handle -> fake Stream, so that fake TensorRT can enqueue on a raw handle
NO_CONTEXT = "explicit_context_dependent failed: invalid device context - no currently active context?"


def _stack() -> list[Any]:
    if not hasattr(_THREAD, "stack"):
        _THREAD.stack = []
    return _THREAD.stack


def current_context() -> Any:
    """The context current on the calling thread, or None."""
    stack = _stack()
    return stack[-1] if stack else None


def enqueue(handle: int, work: Callable[[], None]) -> bool:
    """Queue ``work`` on the stream with this raw handle (False: no such stream)."""
    stream = STREAMS.get(int(handle))
    if stream is None:
        return False
    stream.pending.append(work)
    return True


def make_fake_pycuda(gpu: GPU | list[GPU] | None = DEFAULT_GPU,
                     cuda_version: tuple[int, int, int] = (12, 6, 0)) -> dict[str, types.ModuleType]:
    """``{"pycuda": ..., "pycuda.driver": ..., "pycuda.autoinit": ...}`` for ``sys.modules``.

    ``gpu=None`` fakes a machine without a CUDA device: ``driver.init()`` raises ``driver.Error``;
    a list fakes several GPUs (device 0, 1, ...). ``cuda_version`` is what ``get_version`` says.
    """
    gpus: list[GPU] = [] if gpu is None else list(gpu) if isinstance(gpu, list) else [gpu]
    _THREAD.stack = []  # a fresh machine: nothing current on the calling thread
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
        if not gpus:
            raise Error("cuInit failed: no CUDA-capable device is detected")

    def need_context(what: str) -> Any:
        context = current_context()
        if context is None:
            raise LogicError(f"{what}: {NO_CONTEXT}")
        return context

    class Context:
        def __init__(self, device: Device) -> None:
            self.device = device

        @property
        def active(self) -> bool:
            return current_context() is self

        def push(self) -> None:
            calls.append(("context_push", self.device.index, threading.get_ident()))
            _stack().append(self)

        @staticmethod
        def pop() -> None:  # static in pycuda: pops whatever is current on this thread
            calls.append(("context_pop", threading.get_ident()))
            if not _stack():
                raise LogicError("cuCtxPopCurrent failed: invalid context (the stack of this thread is empty)")
            _stack().pop()

        def detach(self) -> None:
            calls.append(("context_detach",))

        @staticmethod
        def synchronize() -> None:
            calls.append(("context_synchronize",))
            device = need_context("cuCtxSynchronize").device.index
            for stream in list(STREAMS.values()):
                if stream.device == device:
                    stream.run()

    class Device:
        def __init__(self, index: int) -> None:
            if not 0 <= index < len(gpus):
                raise LogicError(f"cuDeviceGet failed: invalid device ordinal {index}")
            self.index = index

        @staticmethod
        def count() -> int:
            return len(gpus)

        def name(self) -> str:
            return gpus[self.index][0]

        def compute_capability(self) -> tuple[int, int]:
            return gpus[self.index][1]

        def total_memory(self) -> int:
            return 80 << 30

        def retain_primary_context(self) -> Context:
            calls.append(("retain_primary_context", self.index))
            return Context(self)

        def make_context(self) -> Context:
            calls.append(("make_context", self.index))
            context = Context(self)
            _stack().append(context)  # made current, as cuCtxCreate does
            return context

    class DeviceAllocation:
        def __init__(self, nbytes: int) -> None:
            need_context("cuMemAlloc")
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
            need_context("cuMemFree")
            if not self.freed:
                HEAP.free(self.address)
                self.freed = True

    class Stream:
        _handles = itertools.count(0x5000)

        def __init__(self, flags: int = 0) -> None:
            calls.append(("stream",))
            self.device = need_context("cuStreamCreate").device.index
            self.handle = next(Stream._handles)
            self.pending: list[Callable[[], None]] = []
            STREAMS[self.handle] = self

        def run(self) -> None:
            while self.pending:
                self.pending.pop(0)()

        def synchronize(self) -> None:
            calls.append(("stream_synchronize", self.handle))
            context = need_context("cuStreamSynchronize")
            if context.device.index != self.device:
                raise LogicError(f"cuStreamSynchronize failed: stream of device {self.device} used in a context of "
                                 f"device {context.device.index}")
            self.run()

        def is_done(self) -> bool:
            return not self.pending

    class Event:
        def __init__(self, flags: int = 0) -> None:
            need_context("cuEventCreate")
            self.stamp: float | None = None
            self.recorded = False

        def record(self, stream: Any = None) -> Event:
            calls.append(("event_record", _stream_handle(stream)))
            self.recorded, self.stamp = True, None

            def stamp() -> None:
                self.stamp = time.perf_counter()
            _queue(stream, stamp)
            return self

        def synchronize(self) -> Event:
            need_context("cuEventSynchronize")
            for stream in list(STREAMS.values()):
                if self.stamp is None:
                    stream.run()
            return self

        def query(self) -> bool:
            return self.stamp is not None

        def time_till(self, end: Event) -> float:
            if self.stamp is None or end.stamp is None:
                raise LogicError("cuEventElapsedTime failed: the event has not completed (not recorded or not synchronised)")
            return (end.stamp - self.stamp) * 1e3

        def time_since(self, start: Event) -> float:
            return start.time_till(self)

    def _queue(stream: Any, work: Callable[[], None]) -> None:
        if stream is None:
            work()  # the legacy default stream: synchronous here
        else:
            stream.pending.append(work)

    def mem_alloc(nbytes: int) -> DeviceAllocation:
        calls.append(("mem_alloc", int(nbytes)))
        return DeviceAllocation(nbytes)

    def pagelocked_empty(shape: Any, dtype: Any, order: str = "C", mem_flags: int = 0) -> np.ndarray:
        calls.append(("pagelocked_empty", tuple(np.atleast_1d(shape)), np.dtype(dtype).name))
        need_context("cuMemHostAlloc")
        return np.empty(shape, dtype=dtype, order=order)

    def _stream_handle(stream: Any) -> Any:
        return None if stream is None else stream.handle

    def memcpy_htod_async(dest: Any, src: np.ndarray, stream: Any = None) -> None:
        calls.append(("memcpy_htod_async", int(dest), np.asarray(src).nbytes, _stream_handle(stream)))
        need_context("cuMemcpyHtoDAsync")
        address, source = int(dest), np.asarray(src)
        HEAP.block(address, source.nbytes)  # a bad address fails at the call, as the driver checks it
        _queue(stream, lambda: HEAP.write(address, source))  # the host buffer is read when the copy runs

    def memcpy_dtoh_async(dest: np.ndarray, src: Any, stream: Any = None) -> None:
        calls.append(("memcpy_dtoh_async", int(src), dest.nbytes, _stream_handle(stream)))
        need_context("cuMemcpyDtoHAsync")
        address = int(src)
        HEAP.block(address, dest.nbytes)

        def copy() -> None:
            raw = HEAP.read(address, dest.nbytes)
            dest.reshape(-1).view(np.uint8)[:] = np.frombuffer(raw, dtype=np.uint8)
        _queue(stream, copy)

    def memcpy_htod(dest: Any, src: np.ndarray) -> None:
        memcpy_htod_async(dest, src)

    def memcpy_dtoh(dest: np.ndarray, src: Any) -> None:
        memcpy_dtoh_async(dest, src)

    def mem_get_info() -> tuple[int, int]:
        need_context("cuMemGetInfo")
        return 70 << 30, 80 << 30

    def get_version() -> tuple[int, int, int]:
        return cuda_version

    def get_driver_version() -> int:
        return cuda_version[0] * 1000 + cuda_version[1] * 10

    driver.__dict__.update(
        Error=Error, LogicError=LogicError, init=init, Device=Device, Context=Context, Event=Event,
        DeviceAllocation=DeviceAllocation, Stream=Stream, mem_alloc=mem_alloc, pagelocked_empty=pagelocked_empty,
        memcpy_htod_async=memcpy_htod_async, memcpy_dtoh_async=memcpy_dtoh_async, memcpy_htod=memcpy_htod,
        memcpy_dtoh=memcpy_dtoh, mem_get_info=mem_get_info, get_version=get_version,
        get_driver_version=get_driver_version,
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
            autoinit.device, autoinit.context = device, device.make_context()  # current on the importing thread
            return getattr(autoinit, name)
        raise AttributeError(f"fake pycuda.autoinit has no attribute {name!r}")

    autoinit.__getattr__ = _autoinit_getattr  # type: ignore[attr-defined]
    package.autoinit = autoinit
    return {"pycuda": package, "pycuda.driver": driver, "pycuda.autoinit": autoinit}
