"""Engines in bundles, over the TensorRT/pycuda doubles: device match, rebuild message, no TensorRT, predict."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from convseg_deploy.cli import main
from convseg_deploy.deploy.bundle import make_bundle
from convseg_deploy.deploy.select import plan
from convseg_deploy.exporters.tensorrt_builder import build_engine
from tests.deploy.cpu_runtime import CPU_LABEL, CPU_RUNTIME
from tests.fakes import install, make_fake_pycuda, make_fake_tensorrt
from tests.fakes.onnx_models import mean_onnx

BUILT_WITH = "10.13.0"


@pytest.fixture(scope="module")
def engine_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bundle of model.fp16.onnx and model.fp16.engine built by fake TensorRT 10.13.0 on sm_90."""
    art = tmp_path_factory.mktemp("engine-art")
    onnx_file = mean_onnx(art / "model.fp16.onnx")
    with pytest.MonkeyPatch.context() as mp:
        install(mp, make_fake_tensorrt(BUILT_WITH))
        build_engine(onnx_file, max_batch=4)
    out = tmp_path_factory.mktemp("engine-bundles") / "bundle"
    make_bundle(art, out, log=lambda _m: None)
    return out


def cli(*args: object):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_bundle_records_engine_and_sidecar(engine_bundle: Path) -> None:
    manifest = json.loads((engine_bundle / "manifest.json").read_text())
    engine = next(e for e in manifest["artifacts"] if e["kind"] == "engine")
    assert engine["file"] == "model.fp16.engine" and engine["precision"] == "fp16"
    assert engine["tensorrt_version"] == BUILT_WITH and engine["compute_capability"] == "9.0"
    assert engine["sidecar"]["file"] == "model.fp16.engine.json" and (engine_bundle / "model.fp16.engine.json").is_file()
    assert engine["expected"] == "reference/expected_fp16.png" and engine["expected_from"] == "model.fp16.onnx"
    assert engine["input_shapes"]["image"]["max"] == [4, 3, 64, 64]


def test_verify_runs_a_matching_engine(engine_bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install(monkeypatch, make_fake_tensorrt(BUILT_WITH))
    result = cli("verify", engine_bundle)
    assert result.exit_code == 0, result.output
    row = next(line for line in result.output.splitlines() if line.startswith("model.fp16.engine "))
    assert row.split()[1:3] == ["ok", "ok"] and "dice" in row


def test_verify_reports_an_engine_from_another_tensorrt(engine_bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install(monkeypatch, make_fake_tensorrt("11.4.0"))
    result = cli("verify", engine_bundle)
    assert result.exit_code == 1
    assert f"(TensorRT version differ): rebuild it here with 'convseg-deploy build-engine --bundle {engine_bundle} " \
           "--precision fp16" in result.output
    assert "Error: verify failed: model.fp16.engine" in result.output


@pytest.mark.parametrize(
    ("trt_version", "cuda", "arch", "differs"),
    [
        ("10.13.0.35", (12, 6, 0), None, "TensorRT version"),  # same release, another build number
        (BUILT_WITH, (13, 0, 0), None, "CUDA major version"),
        (BUILT_WITH, (12, 6, 0), "aarch64", "CPU architecture"),
    ],
)
def test_verify_refuses_an_engine_from_another_build_cuda_or_architecture(
        engine_bundle: Path, monkeypatch: pytest.MonkeyPatch, trt_version: str, cuda: tuple, arch: str | None,
        differs: str) -> None:
    from convseg_deploy.hardware import gpu as device

    trt = make_fake_tensorrt(trt_version)
    install(monkeypatch, trt, make_fake_pycuda(trt.FAKE_GPU, cuda_version=cuda))
    if arch:
        monkeypatch.setattr(device, "host_platform", lambda: {"cpu_arch": arch, "os": "linux"})
    result = cli("verify", engine_bundle)
    assert result.exit_code == 1, result.output
    assert f"({differs} differ): rebuild it here with 'convseg-deploy build-engine --bundle {engine_bundle} " \
           "--precision fp16 --min-batch 1 --opt-batch 1 --max-batch 4'" in result.output
    assert "deserialize_cuda_engine" not in [c[0] for c in trt.calls]


def test_verify_reports_an_engine_from_another_gpu(engine_bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install(monkeypatch, make_fake_tensorrt(BUILT_WITH, gpu=("NVIDIA Jetson AGX Orin", (8, 7))))
    result = cli("verify", engine_bundle)
    assert result.exit_code == 1
    assert "sm_90; this device has TensorRT 10.13.0, CUDA 12.6" in result.output
    assert "sm_87 (GPU architecture differ)" in result.output


def test_engine_without_tensorrt_cannot_run_here_but_onnx_carries_the_bundle(
        engine_bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install(monkeypatch, None)
    result = cli("verify", engine_bundle)
    assert result.exit_code == 0, result.output
    row = next(line for line in result.output.splitlines() if line.startswith("model.fp16.engine "))
    assert "cannot run here" in row
    assert "model.fp16.engine: TensorRT is not installed here" in result.output
    assert "1 cannot run here (model.fp16.engine)" in result.output


def test_engine_only_bundle_without_tensorrt_fails(engine_bundle: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "engine-only"
    make_bundle(engine_bundle, out, ["model.fp16.engine"], log=lambda _m: None)
    manifest = json.loads((out / "manifest.json").read_text())
    assert [e["file"] for e in manifest["artifacts"]] == ["model.fp16.engine"] and manifest["artifacts"][0]["expected"] is None
    install(monkeypatch, None)
    result = cli("verify", out)
    assert result.exit_code == 1 and "no model in the bundle can run on this machine" in result.output


def test_predict_prefers_a_matching_engine(engine_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from convseg_deploy.deploy.render import write_png

    install(monkeypatch, make_fake_tensorrt(BUILT_WITH))
    write_png(tmp_path / "a.png", np.full((40, 70, 3), 180, np.uint8))
    result = cli("predict", "--model", engine_bundle, tmp_path / "a.png", "--out", tmp_path / "out", "--batch-size", 8,
                 "--no-progress")
    assert result.exit_code == 0, result.output
    assert "using model.fp16.engine on TensorRT" in result.output
    assert "batch size lowered from 8 to 4" in result.output
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["backend"] == "tensorrt" and summary["complete"] is True


def test_predict_falls_back_to_onnx_when_the_engine_is_from_elsewhere(
        engine_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from convseg_deploy.deploy.render import write_png

    install(monkeypatch, make_fake_tensorrt("11.4.0"))
    write_png(tmp_path / "a.png", np.full((40, 70, 3), 180, np.uint8))
    result = cli("predict", "--model", engine_bundle, tmp_path / "a.png", "--out", tmp_path / "out", "--no-progress")
    assert result.exit_code == 0, result.output
    assert "skipped model.fp16.engine on TensorRT: engine model.fp16.engine was built for TensorRT 10.13.0, CUDA 12.6" \
        in result.output
    assert f"using model.fp16.onnx on {CPU_LABEL}" in result.output
    result = cli("predict", "--model", engine_bundle, tmp_path / "a.png", "--out", tmp_path / "out2",
                 "--backend", "tensorrt")
    assert result.exit_code == 1 and "build-engine" in result.output
    assert not (tmp_path / "out2").exists()


def test_auto_order_puts_engines_first(engine_bundle: Path) -> None:
    order = [(c.path.name, c.backend, c.provider) for c in plan(engine_bundle)]
    intel = [("model.fp16.onnx", "openvino", "cpu")] if CPU_RUNTIME[0] == "openvino" else []
    assert order == [("model.fp16.engine", "tensorrt", "tensorrt"), ("model.fp16.onnx", "onnxruntime", "cuda"),
                     *intel, ("model.fp16.onnx", "onnxruntime", "cpu")]


def test_device_option_reaches_build_engine_and_predict(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from convseg_deploy.deploy.render import write_png

    trt = make_fake_tensorrt(BUILT_WITH)
    install(monkeypatch, trt, make_fake_pycuda([("NVIDIA H100", (9, 0)), ("NVIDIA A100", (8, 0))]))
    onnx_file = mean_onnx(tmp_path / "model.fp16.onnx")
    result = cli("build-engine", onnx_file, "--device", 1, "--max-batch", 2)
    assert result.exit_code == 0, result.output
    assert "NVIDIA A100 sm_80" in result.output
    write_png(tmp_path / "a.png", np.full((40, 70, 3), 180, np.uint8))
    engine = onnx_file.with_suffix(".engine")
    result = cli("predict", "--model", engine, tmp_path / "a.png", "--out", tmp_path / "out", "--device", 1)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "masks").is_dir()
    result = cli("predict", "--model", engine, tmp_path / "a.png", "--out", tmp_path / "out0", "--device", 0)
    assert result.exit_code == 1 and "(GPU architecture differ)" in result.output
    result = cli("build-engine", onnx_file, "--dla-core", 0)
    assert result.exit_code == 1 and "Error: DLA core 0 does not exist: this device has 0 DLA core(s)" in result.output


def test_device_names_cuda_indices_and_openvino_devices_apart(tmp_path: Path) -> None:
    onnx_file = mean_onnx(tmp_path / "model.fp16.onnx")
    image = tmp_path / "a.png"
    image.write_bytes(b"")
    result = cli("predict", "--model", onnx_file, image, "--out", tmp_path / "o1", "--device", "gpu")
    assert result.exit_code == 2 and "names an OpenVINO device: add --backend openvino" in result.output
    result = cli("predict", "--model", onnx_file, image, "--out", tmp_path / "o2", "--backend", "openvino",
                 "--device", "1")
    assert result.exit_code == 2 and "OpenVINO devices are cpu, gpu, npu" in result.output
    result = cli("predict", "--model", onnx_file, image, "--out", tmp_path / "o3", "--device", "tpu")
    assert result.exit_code == 2 and "use a CUDA device index" in result.output
    assert not any((tmp_path / name).exists() for name in ("o1", "o2", "o3"))
