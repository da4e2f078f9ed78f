"""The checks of benchmarks.openvino_targets: the work count and the verdicts it quotes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from benchmarks.openvino_targets import conv_gmac, judge


def _conv_model(path: Path) -> Path:
    """image (N,3,32,32) -> Conv 8x3x5x5, pad 2 -> Conv 4x8x1x1 -> logits: 32*32*(8*3*25 + 4*8) MACs."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w1 = numpy_helper.from_array(np.zeros((8, 3, 5, 5), np.float32), "w1")
    w2 = numpy_helper.from_array(np.zeros((4, 8, 1, 1), np.float32), "w2")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["image", "w1"], ["h"], name="c1", pads=[2, 2, 2, 2]),
         helper.make_node("Conv", ["h", "w2"], ["logits"], name="c2")], "g",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, 32, 32])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 4, 32, 32])], [w1, w2])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_conv_work_is_counted_per_frame(tmp_path: Path) -> None:
    assert conv_gmac(_conv_model(tmp_path / "m.onnx")) == pytest.approx(32 * 32 * (8 * 3 * 25 + 4 * 8) / 1e9)


def _row(backend: str, provider: str, precision: str, fps: float | None, agreement: float | None = 1.0,
         artifact: str = "model.fp32.onnx", status: str = "ok") -> dict:
    return {"backend": backend, "provider": provider, "precision": precision, "artifact": artifact, "status": status,
            "fps": fps, "latency_ms": {"p50": 1000 / fps} if fps else None, "agreement": agreement, "reason": None}


def test_verdicts_use_the_best_rows_and_leave_unmeasurable_targets_open() -> None:
    rows = [_row("torch", "cpu", "fp32", 1.0), _row("torch", "cpu", "bf16", None, None, status="skipped"),
            _row("onnxruntime", "cpu", "fp32", 2.0),
            _row("openvino", "cpu", "fp32", 1.5),
            _row("openvino", "cpu", "int8", 12.0, 0.80, "model.int8.onnx"),  # fastest INT8 row, but it fails the gate
            _row("openvino", "cpu", "int8-cpu", 4.0, 0.99, "model.int8-cpu.onnx"),
            _row("openvino", "cpu-throughput", "int8-cpu", 4.5, 0.99, "model.int8-cpu.onnx")]
    verdict = judge(rows, gmac=100.0)
    numbers, passed = verdict["numbers"], verdict["passed"]
    assert numbers["int8_vs_torch_fp32"] == 12.0 and passed["int8_vs_torch_fp32"] is True
    assert passed["int8_agreement"] is False  # the row that made the speed must also pass the gate
    assert numbers["int8_vs_torch_bf16"] is None and passed["int8_vs_torch_bf16"] is None  # skipped row: not measurable
    assert numbers["fp32_file_vs_ort_fp32"] == 0.75 and passed["fp32_file_vs_ort_fp32"] is False
    assert numbers["rows"]["openvino/cpu/int8-cpu model.int8-cpu.onnx"]["gmac_per_s"] == 400.0
