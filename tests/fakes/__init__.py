"""Test doubles for what cannot run on the development machines: TensorRT and pycuda.

Typical use in a test::

    from tests.fakes import install, make_fake_tensorrt

    def test_something(monkeypatch):
        trt = make_fake_tensorrt("11.4.0")
        install(monkeypatch, trt)          # also installs a matching fake pycuda
        ...                                # code under test imports tensorrt / pycuda.driver
        assert ("create_network", 0) in trt.calls

``monkeypatch`` undoes everything at the end of the test.
"""

from __future__ import annotations

import sys
import types
from typing import Any

from .fake_pycuda import DEFAULT_GPU, HEAP, make_fake_pycuda
from .fake_tensorrt import make_fake_tensorrt

FLAVOURS = ("10.13.0", "11.4.0")
"""One TensorRT version per flavour of the fake: JetPack 7's 10.x line and the 11.x line."""

PYCUDA_NAMES = ("pycuda", "pycuda.driver", "pycuda.autoinit")

__all__ = [
    "DEFAULT_GPU", "FLAVOURS", "HEAP", "PYCUDA_NAMES", "block", "install", "make_fake_pycuda",
    "make_fake_tensorrt",
]


def install(
    monkeypatch: Any,
    trt_module: types.ModuleType | None,
    pycuda_modules: dict[str, types.ModuleType] | None = None,
) -> dict[str, types.ModuleType]:
    """Put the fakes into ``sys.modules`` for one test; return the pycuda modules installed.

    ``trt_module=None`` makes ``import tensorrt`` fail. Without ``pycuda_modules`` a fake pycuda
    seeing the same GPU as ``trt_module`` is installed (none when ``trt_module`` is None).
    """
    if trt_module is None:
        block(monkeypatch, "tensorrt")
    else:
        monkeypatch.setitem(sys.modules, "tensorrt", trt_module)
    if pycuda_modules is None:
        gpu = getattr(trt_module, "FAKE_GPU", DEFAULT_GPU) if trt_module is not None else DEFAULT_GPU
        pycuda_modules = make_fake_pycuda(gpu)
    for name in PYCUDA_NAMES:
        if name in pycuda_modules:
            monkeypatch.setitem(sys.modules, name, pycuda_modules[name])
        else:
            block(monkeypatch, name)
    return pycuda_modules


def block(monkeypatch: Any, *names: str) -> None:
    """Make ``import NAME`` raise ImportError for the rest of the test (the package is "not installed")."""
    for name in names:
        monkeypatch.setitem(sys.modules, name, None)
