"""The efficiency columns: GMAC per frame from the row's ONNX file, GMAC/s from its FPS, and the
fraction of an injected (fake) peak, through to report.json, report.csv, report.md and the plot."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from convseg_deploy.benchmarks.efficiency import add_efficiency
from convseg_deploy.benchmarks.machine import describe_machine
from convseg_deploy.benchmarks.plots import write_plots
from convseg_deploy.benchmarks.report import build_report, format_table, write_reports
from convseg_deploy.hardware.cpu import describe, this_cpu
from tests.benchmarks.test_report import result

# A peak as hardware.peak.summary gives it; the numbers are made up so the columns can be checked by hand.
PEAK = {"threads": 2, "measured": {"fp32": 50.0, "int8": 200.0}, "measured_by": {"fp32": "onnxruntime", "int8": "openvino"},
        "libraries": {}, "gpu": {}, "theoretical": {"fp32": 160.0, "int8": 640.0},
        "theoretical_basis": {}, "theoretical_note": "theoretical: from instruction sets", "errors": {}, "cached": True}
# Conv 3 -> 64, 3x3, pad 1 at 32x32: 64 x 32 x 32 x 3 x 9 MACs per frame; at 64x64 four times that.
MACS_32 = 64 * 32 * 32 * 3 * 9


def _onnx(path: Path) -> str:
    w = numpy_helper.from_array(np.zeros((64, 3, 3, 3), np.float32), "w")
    graph = helper.make_graph([helper.make_node("Conv", ["image", "w"], ["logits"], pads=[1, 1, 1, 1])], "g",
                              [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, "H", "W"])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, None)], [w])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return str(path)


@pytest.fixture()
def rows(tmp_path: Path) -> list[dict]:
    fp32, int8 = _onnx(tmp_path / "model.fp32.onnx"), _onnx(tmp_path / "model.int8-cpu.onnx")
    return [result(backend="torch", precision="fp32", artifact=str(tmp_path / "best.pt"), fps=2.0, input_size=[32, 32]),
            result(precision="fp32", artifact=fp32, fps=4.0, input_size=[32, 32]),
            result(precision="int8-cpu", artifact=int8, fps=10.0, input_size=[64, 64], batch_size=8),
            result(provider="cuda", precision="fp32", artifact=fp32, fps=500.0, input_size=[32, 32]),
            result("failed", provider="cpu", precision="fp32", artifact=fp32, reason="boom")]


def test_columns_from_fps_macs_and_the_peak(rows: list[dict]) -> None:
    torch_row, ort_row, int8_row, cuda_row, failed = add_efficiency(rows, PEAK)
    gmac = MACS_32 / 1e9
    assert ort_row["gmac_per_frame"] == pytest.approx(gmac, abs=1e-3)
    assert ort_row["gmac_per_s"] == pytest.approx(round(gmac * 4.0, 1))
    assert ort_row["efficiency"] == pytest.approx(round(gmac * 4.0 / 50.0, 3))
    # PyTorch has no ONNX file: it runs the same model at the same size, so it takes that count
    assert torch_row["gmac_per_frame"] == ort_row["gmac_per_frame"] and torch_row["peak_gmac_per_s"] == 50.0
    # int8-cpu at 64x64 is judged against the INT8 peak; fps already counts images of the batch
    assert int8_row["gmac_per_frame"] == pytest.approx(4 * gmac, abs=1e-3)
    assert int8_row["efficiency"] == pytest.approx(round(4 * gmac * 10.0 / 200.0, 3))
    assert cuda_row["gmac_per_s"] is not None and cuda_row["efficiency"] is None  # no GPU peak was measured
    assert failed["gmac_per_s"] is None and failed["efficiency"] is None
    assert add_efficiency(rows, None)[1]["efficiency"] is None  # no probe: work and rate still, no fraction


def test_columns_reach_every_report_file_and_the_plot(rows: list[dict], tmp_path: Path) -> None:
    results = add_efficiency(rows, PEAK)
    report = build_report(describe_machine(2), results, [], None, {}, None, PEAK)
    out = tmp_path / "out"
    written = write_reports(out, report, write_plots)
    assert (out / "roofline.png") in written and (out / "roofline.png").read_bytes()[:4] == b"\x89PNG"
    data = json.loads((out / "report.json").read_text())
    assert data["peak"]["measured"]["int8"] == 200.0
    assert {"gmac_per_frame", "gmac_per_s", "efficiency"} <= set(data["results"][1])
    assert data["results"][2]["efficiency"] == results[2]["efficiency"]
    with open(out / "report.csv", newline="") as fh:
        csv_rows = list(csv.DictReader(fh))
    assert float(csv_rows[1]["efficiency"]) == results[1]["efficiency"]
    assert float(csv_rows[2]["gmac_per_s"]) == results[2]["gmac_per_s"]
    md = (out / "report.md").read_text()
    assert describe(this_cpu()) in md and "fp32: 50 GMAC/s measured (onnxruntime), 160 GMAC/s theoretical" in md
    assert "| GMAC/s | Eff. |" in md and f"| {results[2]['efficiency']:.2f} |" in md
    assert f"{results[1]['efficiency']:.2f}" in format_table(results).splitlines()[3]
