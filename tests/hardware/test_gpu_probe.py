"""The one device probe: all GPUs, the CUDA version, Jetson power mode and clocks, driver presence."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from convseg_deploy.benchmarks.machine import describe_machine
from convseg_deploy import doctor
from convseg_deploy.hardware import gpu as device
from convseg_deploy.errors import ConvSegError, MissingDependencyError
from tests.fakes import install, make_fake_pycuda, make_fake_tensorrt

TWO_GPUS = [("NVIDIA H100", (9, 0)), ("NVIDIA A100", (8, 0))]


def test_every_gpu_from_pycuda_and_the_cuda_version(monkeypatch: pytest.MonkeyPatch) -> None:
    install(monkeypatch, make_fake_tensorrt(), make_fake_pycuda(TWO_GPUS, cuda_version=(12, 8, 0)))
    monkeypatch.setattr(device, "_driver_version", lambda: "570.1")
    assert device.list_gpus() == [
        {"index": 0, "name": "NVIDIA H100", "compute_capability": "9.0", "memory_mib": 80 << 10, "driver": "570.1"},
        {"index": 1, "name": "NVIDIA A100", "compute_capability": "8.0", "memory_mib": 80 << 10, "driver": "570.1"},
    ]
    assert device.cuda_device_info(1) == ("NVIDIA A100", "8.0") and device.cuda_device_info(2) is None
    assert device.cuda_version() == "12.8"
    target = device.engine_target("10.13.0.35", 1)
    assert target == {"tensorrt_version": "10.13.0.35", "cuda_version": "12.8", **device.host_platform(),
                      "gpu_name": "NVIDIA A100", "compute_capability": "8.0"}
    # doctor and the bench's machine section read the same probe
    assert [g["name"] for g in doctor.collect()["gpus"]] == ["NVIDIA H100", "NVIDIA A100"]
    machine = describe_machine(threads=1, device=1)
    assert machine["gpu"] == "NVIDIA A100" and len(machine["gpus"]) == 2


def test_primary_context_checks_the_ordinal_and_tells_no_gpu_from_a_broken_driver(monkeypatch) -> None:
    cuda = make_fake_pycuda(TWO_GPUS)["pycuda.driver"]
    with pytest.raises(ConvSegError, match=r"CUDA device 5 does not exist: this machine has 2 GPU\(s\); pass --device 0 to 1"):
        device.PrimaryContext(cuda, 5)
    gpu = device.PrimaryContext(cuda, 1)
    with gpu:
        assert cuda.mem_alloc(16)  # a context is current inside the block only
    with pytest.raises(cuda.LogicError, match="no currently active context"):
        cuda.mem_alloc(16)
    gpu.release()
    none = make_fake_pycuda(None)["pycuda.driver"]
    monkeypatch.setattr(device, "gpu_expected", lambda: False)
    with pytest.raises(MissingDependencyError, match="no CUDA GPU found"):
        device.PrimaryContext(none, 0)
    monkeypatch.setattr(device, "gpu_expected", lambda: True)
    with pytest.raises(ConvSegError, match="the CUDA driver failed to initialise") as info:
        device.PrimaryContext(none, 0)
    assert not isinstance(info.value, MissingDependencyError)


def _jetson_root(tmp_path: Path, gpu_min: str, gpu_max: str) -> Path:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/nv_tegra_release").write_text("# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic\n")
    (root / "proc/device-tree").mkdir(parents=True)
    (root / "proc/device-tree/model").write_text("NVIDIA Jetson AGX Orin Developer Kit\x00")
    gpu = root / "sys/class/devfreq/17000000.gpu"
    gpu.mkdir(parents=True)
    (gpu / "min_freq").write_text(gpu_min + "\n")
    (gpu / "max_freq").write_text(gpu_max + "\n")
    (root / "sys/class/devfreq/15340000.vic").mkdir()  # another engine's clock, not the GPU's
    return root


def test_jetson_power_mode_and_locked_clocks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tool = tmp_path / "bin" / "nvpmodel"
    tool.parent.mkdir()
    tool.write_text("#!/bin/sh\n[ \"$1\" = -q ] && printf 'NV Power Mode: MAXN\\n0\\n'\n")
    tool.chmod(tool.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{tool.parent}:/usr/bin:/bin")

    locked = device.jetson_info(_jetson_root(tmp_path / "a", "1300500000", "1300500000"))
    assert locked == {"board": "NVIDIA Jetson AGX Orin Developer Kit",
                      "l4t": "R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic",
                      "power_mode": "MAXN", "clocks_locked": True}
    assert device.jetson_info(_jetson_root(tmp_path / "b", "306000000", "1300500000"))["clocks_locked"] is False
    assert device.jetson_info(tmp_path / "nothing") is None  # not a Jetson
    info = {"python": {"version": "3.10", "executable": "py", "platform": "Linux"}, "gpus": [], "jetson": locked,
            "cpu": {"model": "ARMv8", "cores": 12, "flags": [], "vnni": False, "bf16": False, "amx": False, "intel": False,
                        "flags_known": True},
            "torch": {"installed": False, "error": "x"}, "onnxruntime": {"installed": False, "error": "x"},
            "tensorrt": {"installed": True, "version": "10.3.0"}, "pycuda": {"installed": True, "version": "2024.1"},
            "openvino": {"installed": False, "error": "No module named openvino", "advice": ""}, "can_run": []}
    assert "Jetson       NVIDIA Jetson AGX Orin Developer Kit, R36 (release)" in doctor.format_text(info)
    assert "power mode MAXN; clocks locked (jetson_clocks)" in doctor.format_text(info)


def test_gpu_expected_follows_the_driver(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(device.shutil, "which", lambda name: "/usr/bin/nvidia-smi" if name == "nvidia-smi" else None)
    assert device.gpu_expected() is True
    monkeypatch.setattr(device.shutil, "which", lambda name: None)
    monkeypatch.setattr(device, "Path", lambda p: Path("/nonexistent") / p.lstrip("/"))
    assert device.gpu_expected() is False


def test_a_tensorrt_that_is_installed_but_broken_is_not_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    real_import = builtins.__import__

    def broken(name: str, *args, **kwargs):
        if name == "tensorrt":
            raise ImportError("libnvinfer.so.10: cannot open shared object file: No such file or directory")
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(__import__("sys").modules, "tensorrt", raising=False)
    monkeypatch.setattr(builtins, "__import__", broken)
    with pytest.raises(ConvSegError, match="TensorRT is installed but does not load") as info:
        device.import_tensorrt()
    assert not isinstance(info.value, MissingDependencyError)
    install(monkeypatch, None)
    monkeypatch.setattr(builtins, "__import__", real_import)
    with pytest.raises(MissingDependencyError, match="TensorRT is not installed"):
        device.import_tensorrt()
