"""The checks of benchmarks.openvino_targets: the verdicts it quotes (the work count: tests/artifacts/test_macs.py)."""

from __future__ import annotations



from convseg_deploy.benchmarks.openvino_targets import judge


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
