"""The efficiency targets of benchmarks.cpu_targets, judged on handmade rows."""

from __future__ import annotations

from convseg_deploy.benchmarks.cpu_targets import efficiency_verdict
from tests.benchmarks.test_report import result


def _row(backend: str, precision: str, efficiency: float | None, agreement: float = 0.99, provider: str = "cpu",
         artifact: str = "model.int8-cpu.onnx") -> dict:
    return result(backend=backend, precision=precision, efficiency=efficiency, agreement=agreement, provider=provider,
                  artifact=artifact, gmac_per_s=100.0, gmac_per_frame=136.0, peak_gmac_per_s=120.0)


def test_best_agreeing_int8_row_and_best_fp32_row_are_judged() -> None:
    rows = [_row("onnxruntime", "int8-cpu", 0.70), _row("openvino", "int8-cpu", 0.90, agreement=0.95),  # fast, disagrees
            _row("openvino", "int8-cpu", 0.80, provider="cpu-throughput"),
            _row("torch", "fp32", 0.40, artifact="best.pt"), _row("onnxruntime", "fp32", 0.78, artifact="model.fp32.onnx"),
            _row("onnxruntime", "int8-cpu", 5.0, provider="cuda")]  # a GPU row is not a CPU row
    numbers, checks = efficiency_verdict(rows)
    assert numbers["best_int8_row"] == "openvino/cpu-throughput/int8-cpu model.int8-cpu.onnx"
    assert numbers["best_int8_efficiency"] == 0.80 and checks["best_int8_efficiency"] and checks["best_int8_agreement"]
    assert numbers["best_fp32_row"].startswith("onnxruntime/cpu/fp32") and checks["best_fp32_efficiency"]
    assert len(numbers["rows"]) == 5


def test_misses_and_rows_that_did_not_run() -> None:
    numbers, checks = efficiency_verdict([_row("onnxruntime", "int8-cpu", 0.74, agreement=0.96),
                                          _row("onnxruntime", "fp32", 0.5, artifact="model.fp32.onnx")])
    assert checks == {"best_int8_efficiency": False, "best_int8_agreement": False, "best_fp32_efficiency": False}
    _, none_ran = efficiency_verdict([_row("onnxruntime", "fp32", None)])
    assert none_ran == {"best_int8_efficiency": None, "best_int8_agreement": None, "best_fp32_efficiency": None}
