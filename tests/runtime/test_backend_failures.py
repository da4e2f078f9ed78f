"""Installed but failing is a failure, absent is a skip: the PyTorch and ONNX Runtime runners' side.

MissingDependencyError (what the bench and predict treat as "not here, skip") is raised only
where the machine has no NVIDIA driver at all; on a machine with one, a GPU backend that does
not come up raises ConvSegError, which fails the bench row and the run.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from convseg_deploy.hardware import gpu as device
from convseg_deploy.errors import ConvSegError, MissingDependencyError
from tests.fakes.onnx_models import tiny_onnx


@pytest.mark.parametrize(("driver", "error"), [(False, MissingDependencyError), (True, ConvSegError)])
def test_torch_cuda_that_does_not_come_up(monkeypatch: pytest.MonkeyPatch, driver: bool, error: type) -> None:
    torch = pytest.importorskip("torch")
    from convseg_deploy.runtime.torch_runner import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.version, "cuda", "12.6")  # a CUDA build of PyTorch
    monkeypatch.setattr(device, "gpu_expected", lambda: driver)
    with pytest.raises(error) as info:
        resolve_device("cuda:0")
    assert isinstance(info.value, MissingDependencyError) is (not driver)
    assert resolve_device("cpu") == "cpu"


@pytest.mark.parametrize(("driver", "error"), [(False, MissingDependencyError), (True, ConvSegError)])
def test_onnxruntime_provider_listed_but_not_loading(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, driver: bool,
                                                      error: type) -> None:
    ort = pytest.importorskip("onnxruntime")
    from convseg_deploy.deploy.select import provider_loads
    from convseg_deploy.runtime.onnxruntime_runner import OnnxRuntimeRunner

    if "CUDAExecutionProvider" not in ort.get_available_providers() or provider_loads("CUDAExecutionProvider")[0]:
        pytest.skip("needs an onnxruntime that lists the CUDA provider on a machine where it does not load")
    monkeypatch.setattr(device, "gpu_expected", lambda: driver)
    runner = OnnxRuntimeRunner(tiny_onnx(tmp_path / "m.onnx", precision="fp32"), provider="cuda")
    with pytest.raises(error, match="CUDAExecutionProvider is listed but did not load") as info:
        runner.activate()
    assert isinstance(info.value, MissingDependencyError) is (not driver)
