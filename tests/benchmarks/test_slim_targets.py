"""convseg_deploy.benchmarks.slim_targets' judging: FPS ratios of the pruned and unpruned model's rows of one bench."""

from __future__ import annotations

from pathlib import Path

import pytest

from convseg_deploy.benchmarks.slim_targets import MIN_SPEEDUP, judge_speed

PARENT, PRUNED = Path("/r/export-unpruned"), Path("/r/export-pruned")


def _row(folder: Path, backend: str, precision: str, fps: float, status: str = "ok") -> dict:
    return {"backend": backend, "provider": "cpu", "precision": precision, "fps": fps, "status": status,
            "artifact": str(folder / f"model.{precision}.onnx")}


def test_speedups_are_ratios_of_the_same_rows_and_the_best_int8_row_of_each_model() -> None:
    rows = [_row(PARENT, "onnxruntime", "fp32", 0.5), _row(PRUNED, "onnxruntime", "fp32", 1.2),
            _row(PARENT, "onnxruntime", "int8-cpu", 2.0), _row(PARENT, "openvino", "int8", 3.0),
            _row(PRUNED, "openvino", "int8", 5.0), _row(PRUNED, "onnxruntime", "int8-cpu", 7.0),
            _row(PRUNED, "openvino", "fp32", 99.0)]  # not an ORT row: ignored for ort_fp32
    verdict = judge_speed(rows, PARENT, PRUNED)
    assert verdict["numbers"]["ort_fp32"]["speedup"] == 2.4 and verdict["passed"]["ort_fp32"] is True
    assert verdict["numbers"]["best_int8"]["speedup"] == round(7.0 / 3.0, 2) and verdict["passed"]["best_int8"] is True
    assert "openvino/int8" in verdict["numbers"]["best_int8"]["unpruned_row"]


def test_a_speedup_under_the_target_or_a_missing_row_fails() -> None:
    rows = [_row(PARENT, "onnxruntime", "fp32", 1.0), _row(PRUNED, "onnxruntime", "fp32", MIN_SPEEDUP * 0.99),
            _row(PARENT, "onnxruntime", "int8-cpu", 1.0), _row(PRUNED, "onnxruntime", "int8-cpu", 9.0, status="failed")]
    verdict = judge_speed(rows, PARENT, PRUNED)
    assert verdict["passed"] == {"ort_fp32": False, "best_int8": False}
    assert verdict["numbers"]["best_int8"] == "rows missing"


def test_the_speed_models_search_uses_its_budget(tmp_path: Path) -> None:
    """Regression: scored against an untrained parent's default BatchNorm statistics, which FastNAS
    replaces before scoring each candidate, narrowing looked free and resnet50 fell to 2% of its
    FLOPs for a 40% budget. Against the re-calibrated parent the search lands within the budget's band."""
    pytest.importorskip("modelopt.torch.prune")
    from convseg_deploy.benchmarks.slim_targets import MIN_BUDGET_USE, SPEED_BUDGET, full_model_checkpoints

    _, pruned, record = full_model_checkpoints(tmp_path, encoder="resnet18", size=64)
    fraction = record["flops_after"] / record["flops_unpruned"]
    assert MIN_BUDGET_USE * SPEED_BUDGET <= fraction <= SPEED_BUDGET, fraction
    assert pruned.exists()
