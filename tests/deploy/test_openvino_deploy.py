"""OpenVINO in the deploy commands: predict's auto order and --backend openvino, verify, doctor."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from convseg_deploy import doctor
from convseg_deploy.cli import main
from convseg_deploy.deploy import select
from convseg_deploy.deploy.render import write_png
from convseg_deploy.errors import ConvSegError
from convseg_deploy.synth import render_frame


def cli(*args: object):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVSEG_OPENVINO_CACHE", str(tmp_path / "ov-cache"))


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "a.png"
    write_png(path, render_frame(np.random.default_rng(4), 64, empty_fraction=0.0)[0])
    return path


@pytest.mark.parametrize("preferred", [True, False])
def test_auto_order_puts_openvino_before_onnxruntime_cpu_on_intel(artifacts: Path, preferred: bool,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(select, "openvino_preferred", lambda: preferred)
    order = [(c.backend, c.provider, c.precision) for c in select.plan(artifacts)]
    ov = [("openvino", "cpu", "int8-cpu"), ("openvino", "cpu", "fp32")] if preferred else []
    assert order == [("onnxruntime", "cuda", "fp32"), ("onnxruntime", "cuda", "int8-cpu"), *ov,
                     ("onnxruntime", "cpu", "int8-cpu"), ("onnxruntime", "cpu", "fp32")]
    single = [(c.backend, c.provider) for c in select.plan(artifacts / "model.fp32.onnx")]
    assert single == [("onnxruntime", "cuda"), *([("openvino", "cpu")] if preferred else []), ("onnxruntime", "cpu")]
    # an explicit --backend onnxruntime keeps to ONNX Runtime, for a folder and for a single file
    for model in (artifacts, artifacts / "model.fp32.onnx"):
        assert {c.backend for c in select.plan(model, backend="onnxruntime")} == {"onnxruntime"}


@pytest.fixture(scope="module")
def gpu_bundle(framework_export: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A GPU bundle, fp16 + the TensorRT-flavour int8, as an Intel clinic PC might be handed."""
    from convseg_deploy.deploy.bundle import make_bundle

    out = tmp_path_factory.mktemp("gpu-bundle") / "bundle"
    make_bundle(framework_export, out, ("fp16", "int8"), log=lambda _msg: None)
    return out


def test_openvino_never_runs_the_tensorrt_flavour_int8(gpu_bundle: Path, image: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from convseg_deploy.artifacts.names import predict_order

    assert "int8" not in predict_order("openvino", "cpu") == select.OPENVINO_ORDER
    monkeypatch.setattr(select, "openvino_preferred", lambda: True)
    order = [(c.backend, c.precision) for c in select.plan(gpu_bundle)]
    assert [p for b, p in order if b == "openvino"] == ["fp16"]
    assert [p for b, p in order if b == "onnxruntime"] == ["fp16", "int8", "int8", "fp16"]  # CUDA, then CPU
    assert [c.precision for c in select.plan(gpu_bundle, backend="openvino", device="gpu")] == ["fp16"]
    # a single int8 file: the auto order leaves OpenVINO out; an explicit --backend openvino is obeyed
    single = gpu_bundle / "model.int8.onnx"
    assert [c.backend for c in select.plan(single)] == ["onnxruntime", "onnxruntime"]
    assert [c.backend for c in select.plan(single, backend="openvino")] == ["openvino"]
    with pytest.raises(ConvSegError, match="not for OpenVINO, which runs int8-cpu, fp32, fp16"):
        select.plan(gpu_bundle, backend="openvino", precision="int8")
    out = tmp_path / "out"
    result = cli("predict", "--model", gpu_bundle, image, "--out", out, "--backend", "openvino", "--no-progress")
    assert result.exit_code == 0, result.output
    assert "using model.fp16.onnx on OpenVINO (CPU)" in result.output


def test_the_bundle_usage_prints_predict_order_from_its_one_place(gpu_bundle: Path) -> None:
    from convseg_deploy.artifacts.names import PREDICT_ORDER, predict_order_lines

    usage = (gpu_bundle / "USAGE.txt").read_text()
    assert "\n".join(predict_order_lines()) in usage
    for _, _, where, order in PREDICT_ORDER:
        assert f"{where}: {', '.join(order)}" in usage
    assert "OpenVINO" in usage


def test_openvino_preferred_needs_intel_and_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    from convseg_deploy.hardware import cpu

    monkeypatch.setattr(cpu, "this_cpu", lambda: {"intel": False})
    assert select.openvino_preferred() is False
    monkeypatch.setattr(cpu, "this_cpu", lambda: {"intel": True})
    assert select.openvino_preferred() is (importlib.util.find_spec("openvino") is not None)
    monkeypatch.setitem(sys.modules, "openvino", None)  # as if not installed: find_spec answers None
    assert select.openvino_preferred() is False


@pytest.mark.cpu_dependent
def test_predict_with_openvino(artifacts: Path, image: Path, tmp_path: Path) -> None:
    pytest.importorskip("openvino")
    result = cli("predict", "--model", artifacts, image, "--out", tmp_path / "out", "--backend", "openvino",
                 "--precision", "int8-cpu", "--no-progress")
    assert result.exit_code == 0, result.output
    assert "using model.int8-cpu.onnx on OpenVINO (CPU)" in result.output
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["backend"] == "openvino" and summary["complete"] is True
    result = cli("predict", "--model", artifacts / "model.fp32.onnx", image, "--out", tmp_path / "o2", "--backend",
                 "openvino", "--device", "npu", "--no-progress")
    if "NPU" not in __import__("openvino").Core().available_devices:
        assert result.exit_code == 1 and "OpenVINO sees no NPU device here" in result.output
        assert "Traceback" not in result.output


def test_auto_skips_openvino_when_it_cannot_load(artifacts: Path, image: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(select, "openvino_preferred", lambda: True)
    monkeypatch.setitem(sys.modules, "openvino", None)  # listed as preferred, but the import fails
    result = cli("predict", "--model", artifacts, image, "--out", tmp_path / "out", "--no-progress")
    assert result.exit_code == 0, result.output
    assert "skipped OpenVINO (CPU): OpenVINO is not installed" in result.output
    assert "using model.int8-cpu.onnx on ONNX Runtime (CPU)" in result.output


@pytest.mark.cpu_dependent
def test_verify_with_openvino(bundle_dir: Path) -> None:
    pytest.importorskip("openvino")
    result = cli("verify", bundle_dir, "--backend", "openvino")
    assert result.exit_code == 0, result.output
    assert "bundle OK: 2 of 2 models verified" in result.output
    result = cli("verify", bundle_dir, "--backend", "onnxruntime", "--provider", "npu")
    assert result.exit_code == 2 and "not a device of onnxruntime" in result.output


@pytest.mark.cpu_dependent
def test_doctor_reports_openvino_and_when_it_helps(monkeypatch: pytest.MonkeyPatch) -> None:
    info = json.loads(cli("doctor", "--json").stdout)
    assert set(info["openvino"]) >= {"installed", "advice"} and "bf16" in info["cpu"] and "amx" in info["cpu"]
    if info["openvino"]["installed"]:
        assert "CPU" in info["openvino"]["devices"] and any(line.startswith("OpenVINO CPU") for line in info["can_run"])
    intel = {"intel": True, "amx": True, "vnni": True, "bf16": True}
    assert doctor.openvino_advice(intel, {"installed": False}).startswith("would help: Intel CPU with AMX, VNNI, BF16")
    assert 'pip install "convseg-deploy[openvino]"' in doctor.openvino_advice(intel, {"installed": False})
    assert "installed, predict --backend auto uses it" in doctor.openvino_advice(intel, {"installed": True})
    assert doctor.openvino_advice({"intel": False}, {"installed": True}).startswith("not an Intel CPU")
    monkeypatch.setitem(sys.modules, "openvino", None)
    assert doctor.openvino_info()["installed"] is False
