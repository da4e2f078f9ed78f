"""OpenVINO rows of ``bench``: parity, the bf16 row gated by agreement, the throughput row, and
what a missing OpenVINO (skipped) and a failing device (failed) look like."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner, Result

from convseg_deploy.benchmarks.plan import plan_rows
from convseg_deploy.cli import main

ov = pytest.importorskip("openvino", reason="OpenVINO is not installed: pip install 'convseg-deploy[openvino]'")
from convseg_deploy.runtime.openvino_runner import OpenVinoRunner, device_capabilities  # noqa: E402

FAST = ["--iters", "3", "--warmup", "1", "--batch-sizes", "1", "--max-images", "8", "--no-progress", "--threads", "2"]


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVSEG_OPENVINO_CACHE", str(tmp_path / "ov-cache"))


def bench(*args: str | Path) -> Result:
    return CliRunner().invoke(main, ["bench", *map(str, args), *FAST], catch_exceptions=False)


def by_label(out: Path) -> dict[tuple[str, str, str, str], dict[str, Any]]:
    results = json.loads((out / "report.json").read_text())["results"]
    return {(r["backend"], r["provider"], r["precision"], Path(r["artifact"] or "-").name): r for r in results}


def test_plan_has_latency_bf16_and_throughput_rows(bench_artifacts: Path) -> None:
    rows = [r for r in plan_rows(None, str(bench_artifacts), ["openvino"], ["cpu", "cuda"], [1, 4]) if r.artifact]
    names = {(r.provider, r.precision, r.artifact.name, r.batch_size) for r in rows}
    assert ("cpu", "fp32", "model.fp32.onnx", 4) in names and ("cpu", "bf16", "model.fp32.onnx", 1) in names
    assert ("cpu-throughput", "int8-cpu", "model.int8-cpu.onnx", 1) in names
    assert not any(p == "int8-cpu+bf16" for _, p, _, _ in names)  # bf16 is offered for the fp32 file only
    assert len(rows) == 2 * (3 + 2)  # batch sizes x (fp32: f32, bf16, throughput; int8-cpu: f32, throughput)
    assert len({r.runner_key for r in rows}) == 5


@pytest.mark.cpu_dependent
def test_openvino_rows_match_onnxruntime(bench_artifacts: Path, synth_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    res = bench("--artifacts", bench_artifacts, "--data", synth_data, "--backends", "onnxruntime,openvino",
                "--providers", "cpu", "--max-dice-drop", "0.05", "--min-agreement", "0.9", "--out", out)
    assert res.exit_code == 0, res.output
    rows = by_label(out)
    ref = rows[("onnxruntime", "cpu", "fp32", "model.fp32.onnx")]
    fp32 = rows[("openvino", "cpu", "fp32", "model.fp32.onnx")]
    assert fp32["status"] == "ok" and fp32["agreement"] >= 0.999 and abs(fp32["dice"] - ref["dice"]) < 1e-3
    int8 = rows[("openvino", "cpu", "int8-cpu", "model.int8-cpu.onnx")]
    assert int8["status"] == "ok" and int8["agreement"] >= 0.9 and int8["fps"] > 0
    stream = rows[("openvino", "cpu-throughput", "int8-cpu", "model.int8-cpu.onnx")]
    assert stream["status"] == "ok" and stream["requests_in_flight"] >= 1
    assert stream["iters"] >= 2 * stream["requests_in_flight"] and stream["latency_ms"]["p50"] > 0
    # the throughput row's FPS is images over wall time, not 1000 / mean latency of one request
    assert stream["fps"] != pytest.approx(1e3 / stream["latency_ms"]["mean"], rel=1e-6)
    bf16 = rows[("openvino", "cpu", "bf16", "model.fp32.onnx")]
    if "BF16" in device_capabilities(ov.Core(), "CPU"):
        assert bf16["status"] == "ok" and bf16["agreement"] is not None
    else:  # this CPU lacks AMX/AVX512-BF16: a skipped row that says so, never a silent f32 run
        assert bf16["status"] == "skipped" and "no native bf16" in bf16["reason"]
        assert "no native bf16" in res.output


def bf16_round(x: np.ndarray) -> np.ndarray:
    """float32 values rounded to the nearest bfloat16 (8 significant bits), as float32."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    return ((bits + np.uint32(0x7FFF) + ((bits >> 16) & 1)) & np.uint32(0xFFFF0000)).view(np.float32)


class Bf16Request:
    def __init__(self, request: Any) -> None:
        self.request = request

    def infer(self, inputs: dict[int, np.ndarray]) -> Any:
        return self.request.infer({k: bf16_round(v) for k, v in inputs.items()})

    def get_output_tensor(self, index: int) -> Any:
        return type("Tensor", (), {"data": bf16_round(self.request.get_output_tensor(index).data)})()


class Bf16Compiled:
    def __init__(self, compiled: Any) -> None:
        self.compiled = compiled

    def get_property(self, name: str) -> Any:
        if name == "INFERENCE_PRECISION_HINT":
            return type("Precision", (), {"to_string": lambda self: "bf16"})()
        return self.compiled.get_property(name)

    def create_infer_request(self) -> Bf16Request:
        return Bf16Request(self.compiled.create_infer_request())


class Bf16RoundingCore(ov.Core):
    """OpenVINO's CPU plugin in bf16 where this CPU has no bf16 kernels (an AVX2-only EPYC, or
    under ONEDNN_MAX_CPU_ISA=AVX2, where a bf16 hint runs as f32 or fails to compile): the model
    runs in f32 with its input and output rounded to bf16, so the row is lossy as a bf16 one is
    (not bit for bit the same numbers), and the compiled model reports bf16 as the real one does."""

    def compile_model(self, model: Any, device: str | None = None, config: dict | None = None) -> Any:
        config = dict(config or {})
        if config.get("INFERENCE_PRECISION_HINT") != "bf16":
            return super().compile_model(model, device, config)
        return Bf16Compiled(super().compile_model(model, device, {**config, "INFERENCE_PRECISION_HINT": "f32"}))


@pytest.mark.cpu_dependent
def test_bf16_row_is_gated_by_agreement(bench_artifacts: Path, synth_data: Path, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    # Make the CPU claim BF16 so that the row runs on every CPU; where it has no bf16 kernels a
    # double computes lossy like bf16 in their place. An agreement above 1 must fail its gate.
    if "BF16" not in device_capabilities(ov.Core(), "CPU"):
        monkeypatch.setattr(ov, "Core", Bf16RoundingCore)
    monkeypatch.setattr(OpenVinoRunner, "_capabilities", lambda self, name: ["FP32", "BF16", "INT8"])
    out = tmp_path / "report"
    res = bench("--artifacts", bench_artifacts / "model.fp32.onnx", "--data", synth_data, "--backends",
                "onnxruntime,openvino", "--providers", "cpu", "--max-dice-drop", "1", "--min-agreement", "0.999", "--out", out)
    rows = by_label(out)
    bf16 = rows[("openvino", "cpu", "bf16", "model.fp32.onnx")]
    assert bf16["status"] == "ok" and bf16["agreement"] is not None
    gate = "min-agreement openvino/cpu/bf16 model.fp32.onnx"
    gates = {g["name"]: g for g in json.loads((out / "report.json").read_text())["gates"]}
    assert gates[gate]["passed"] is (bf16["agreement"] >= 0.999)
    assert gates["min-agreement openvino/cpu/fp32 model.fp32.onnx"]["passed"]  # f32 inference is exact
    res = bench("--artifacts", bench_artifacts / "model.fp32.onnx", "--data", synth_data, "--backends",
                "onnxruntime,openvino", "--providers", "cpu", "--max-dice-drop", "1", "--min-agreement", "1.01")
    assert res.exit_code == 1 and gate in res.output


def test_missing_openvino_is_a_skipped_row_with_reason(bench_artifacts: Path, synth_data: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "openvino", None)  # `import openvino` fails, as without the extra
    res = bench("--artifacts", bench_artifacts / "model.fp32.onnx", "--data", synth_data, "--backends",
                "onnxruntime,openvino", "--providers", "cpu")
    assert res.exit_code == 0, res.output
    assert 'skipped: openvino/cpu/fp32 model.fp32.onnx: OpenVINO is not installed' in res.output
    assert 'pip install "convseg-deploy[openvino]"' in res.output and "Traceback" not in res.output


class FailingGpuCore(ov.Core):
    """OpenVINO with an Intel GPU that is listed but cannot compile (e.g. a driver without OpenCL),
    raising what the real GPU plugin raises: a RuntimeError with source-location lines first."""

    @property
    def available_devices(self) -> list[str]:
        return [*super().available_devices, "GPU"]

    def get_property(self, device: str, name: str) -> Any:
        return ["FP32", "FP16", "INT8"] if device == "GPU" else super().get_property(device, name)

    def compile_model(self, model: Any, device: str | None = None, config: dict | None = None) -> Any:
        if device == "GPU":
            raise RuntimeError("Exception from src/inference/src/cpp/core.cpp:117:\n"
                               "[GPU] ProgramBuilder build failed!\nclGetPlatformIDs error -1001\n")
        return super().compile_model(model, device, config or {})


def test_installed_but_failing_device_is_a_failed_row(bench_artifacts: Path, synth_data: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ov, "Core", FailingGpuCore)
    out = tmp_path / "report"
    res = bench("--artifacts", bench_artifacts / "model.fp32.onnx", "--data", synth_data, "--backends", "openvino",
                "--providers", "cpu,gpu", "--out", out)
    assert res.exit_code == 1 and "no-failed-rows" in res.output.splitlines()[-1]
    rows = by_label(out)
    gpu = rows[("openvino", "gpu", "fp32", "model.fp32.onnx")]
    assert gpu["status"] == "failed"
    assert gpu["reason"].startswith("OpenVINO cannot compile model.fp32.onnx for GPU") and "ProgramBuilder" in gpu["reason"]
    assert rows[("openvino", "cpu", "fp32", "model.fp32.onnx")]["status"] == "ok"  # the other device still ran


@pytest.mark.cpu_dependent
def test_the_bf16_double_is_lossy_like_the_real_bf16(bench_artifacts: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    if "BF16" not in device_capabilities(ov.Core(), "CPU"):
        pytest.skip("this CPU has no bf16 kernels to hold the double against (AVX512-BF16 or AMX)")
    from convseg_deploy.metrics import mean_dice

    model = bench_artifacts / "model.fp32.onnx"
    batch = np.random.default_rng(0).normal(size=(2, 3, 64, 64)).astype(np.float32)
    with OpenVinoRunner(model, threads=2) as f32, OpenVinoRunner(model, inference_precision="bf16", threads=2) as real:
        want, native = f32.infer(batch), real.infer(batch)
    monkeypatch.setattr(ov, "Core", Bf16RoundingCore)
    with OpenVinoRunner(model, inference_precision="bf16", threads=2) as double:
        emulated = double.infer(batch)
        assert double.info.precision == "bf16" and double.info.extra["effective_precision"] == "bf16"
    for got in (native, emulated):  # both really lossy, both close to f32
        rel = np.abs(got - want).max() / np.abs(want).max()
        assert 0 < rel < 0.1 and mean_dice(got > 0, want > 0) >= 0.9
