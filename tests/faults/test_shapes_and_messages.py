"""Static shapes honoured by predict, bench and verify; foreign error messages kept to their cause."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from convseg_deploy.deploy.render import write_png
from convseg_deploy.errors import ConvSegError, shorten
from convseg_deploy.synth import render_frame
from tests.faults.helpers import cli


@pytest.fixture(scope="module")
def static_export(trained_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An FP32 export with a batch fixed at 1 (``--static-batch``)."""
    from convseg_deploy.exporters.pipeline import export_artifacts

    out = tmp_path_factory.mktemp("static")
    export_artifacts(trained_checkpoint, out, ("fp32",), static_batch=True, verify_count=2, log=lambda _m: None)
    return out


def test_shorten_cuts_the_middle_and_keeps_the_cause() -> None:
    text = "[ONNXRuntimeError] : 1 : FAIL : Load model from x.onnx failed:" + " padding" * 100 + \
        "\nUnsupported model IR version: 14, max supported IR version: 10"
    short = shorten(text, 300)
    assert len(short) <= 300 and "\n" not in short
    assert short.startswith("[ONNXRuntimeError]") and short.endswith("max supported IR version: 10")
    assert shorten("short message") == "short message"


def test_onnx_runtime_load_error_keeps_its_cause(tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    from convseg_deploy.artifacts.onnx_meta import set_metadata
    from convseg_deploy.config import PreprocessSpec
    from convseg_deploy.runtime.onnxruntime_runner import OnnxRuntimeRunner

    x = helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 64, 64])
    graph = helper.make_graph([helper.make_node("Identity", ["image"], ["logits"])], "g", [x],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 3, 64, 64])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 99  # newer than any ONNX Runtime reads
    set_metadata(model, {"preprocess": PreprocessSpec(size=(64, 64)).to_dict(), "threshold": 0.5, "precision": "fp32"})
    path = tmp_path / "future.onnx"
    onnx.save(model, str(path))
    with pytest.raises(ConvSegError) as info:
        OnnxRuntimeRunner(path).activate()
    message = str(info.value)
    assert "\n" not in message and "IR version" in message and "99" in message


def test_predict_runs_a_static_batch_model_one_frame_at_a_time(static_export: Path, tmp_path: Path) -> None:
    for i in range(5):
        write_png(tmp_path / "in" / f"f{i}.png", render_frame(np.random.default_rng(i), 64)[0])
    out = tmp_path / "out"
    result = cli("predict", "--model", static_export, tmp_path / "in", "--out", out, "--batch-size", "4", "--no-progress")
    assert result.exit_code == 0, result.output
    assert "batch size lowered from 4 to 1, the model's static batch" in result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["complete"] is True and summary["frames"] == 5 and summary["batch_size"] == 1


def test_bench_skips_batches_a_static_model_cannot_take(static_export: Path, synth_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "bench"
    result = cli("bench", "--artifacts", static_export, "--data", synth_data, "--max-images", "4", "--backends",
                 "onnxruntime", "--providers", "cpu", "--batch-sizes", "1,8", "--iters", "1", "--warmup", "0",
                 "--out", out, "--no-progress")
    assert result.exit_code == 0, result.output
    rows = {r["batch_size"]: r for r in json.loads((out / "report.json").read_text())["results"]}
    assert rows[1]["status"] == "ok" and rows[1]["sha256"] == json.loads(
        (static_export / "manifest.json").read_text())["artifacts"][0]["sha256"]
    assert rows[8]["status"] == "skipped"
    assert rows[8]["reason"] == "batch 8 exceeds the model's largest batch (1): re-export without --static-batch"


def test_a_static_batch_export_bundles_verifies_and_predicts(static_export: Path, tmp_path: Path) -> None:
    assert cli("bundle", "--artifacts", static_export, "--out", tmp_path / "b").exit_code == 0
    result = cli("verify", tmp_path / "b")
    assert result.exit_code == 0 and "bundle OK: 1 of 1" in result.output
    for i in range(3):
        write_png(tmp_path / "in" / f"f{i}.png", render_frame(np.random.default_rng(i), 64)[0])
    result = cli("predict", "--model", tmp_path / "b", tmp_path / "in", "--out", tmp_path / "out", "--no-progress")
    assert result.exit_code == 0, result.output
