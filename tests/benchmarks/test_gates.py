"""Judging as pure functions: reference choice, Dice drop, agreement and every gate."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from convseg_deploy.benchmarks.gates import (
    PackedMasks,
    Thresholds,
    agreement,
    compare,
    evaluate_gates,
    failed_gates,
    pick_reference,
)


def row(backend: str = "onnxruntime", provider: str = "cpu", precision: str = "fp32", status: str = "ok",
        batch: int = 1, dice: float | None = 0.8, fps: float | None = 10.0, reason: str | None = None,
        artifact: str = "model.fp32.onnx") -> dict[str, Any]:
    return {"backend": backend, "provider": provider, "precision": precision, "artifact": artifact,
            "batch_size": batch, "status": status, "reason": reason, "dice": dice if status == "ok" else None,
            "fps": fps if status == "ok" else None, "dice_drop": None, "agreement": None, "accuracy_reason": None,
            "runner_key": f"{backend}/{provider}/{precision}:{artifact}"}


TORCH = row("torch", artifact="best.pt", dice=0.80)
ONNX32 = row(dice=0.79)
INT8 = row(precision="int8-cpu", artifact="model.int8-cpu.onnx", dice=0.77)


def masks(*rows: np.ndarray) -> PackedMasks:
    return PackedMasks.pack(np.stack(rows))


FULL = np.ones((4, 4), bool)
HALF = np.zeros((4, 4), bool)
HALF[:2] = True


def test_packed_masks_round_trip() -> None:
    m = np.random.default_rng(0).random((3, 5, 7)) > 0.5
    packed = PackedMasks.pack(m)
    assert packed.bits.nbytes < m.size and np.array_equal(packed.unpack(), m)


def test_reference_prefers_pytorch_fp32_then_onnx_fp32() -> None:
    assert pick_reference([INT8, ONNX32, TORCH])["backend"] == "torch"
    assert pick_reference([INT8, ONNX32])["runner_key"] == ONNX32["runner_key"]
    assert pick_reference([INT8, row("torch", status="failed", artifact="best.pt")]) is None


def test_compare_adds_drop_and_agreement_without_touching_input() -> None:
    store = {TORCH["runner_key"]: masks(FULL, FULL), INT8["runner_key"]: masks(FULL, HALF)}
    out = compare([TORCH, INT8], store, TORCH)
    assert INT8["dice_drop"] is None  # input untouched
    assert out[0]["dice_drop"] == 0.0 and out[0]["agreement"] == 1.0
    assert out[1]["dice_drop"] == pytest.approx(0.03)
    assert out[1]["agreement"] == pytest.approx((1.0 + 2 / 3) / 2)  # Dice(half, full) = 2*8/(8+16)


def test_agreement_needs_same_shape() -> None:
    assert agreement(masks(FULL), PackedMasks.pack(np.ones((1, 8, 8), bool))) is None
    assert agreement(None, masks(FULL)) is None


def judged(rows: list[dict[str, Any]], store: dict[str, PackedMasks]) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    ref = pick_reference(rows)
    return compare(rows, store, ref), ref


def test_dice_drop_and_agreement_gates_name_the_row() -> None:
    store = {TORCH["runner_key"]: masks(FULL, FULL), INT8["runner_key"]: masks(FULL, HALF),
             ONNX32["runner_key"]: masks(FULL, FULL)}
    results, ref = judged([TORCH, ONNX32, INT8], store)
    gates = evaluate_gates(results, Thresholds(max_dice_drop=0.02, min_agreement=0.9), ref)
    failed = failed_gates(gates)
    assert failed == ["max-dice-drop onnxruntime/cpu/int8-cpu model.int8-cpu.onnx",
                      "min-agreement onnxruntime/cpu/int8-cpu model.int8-cpu.onnx"]
    assert not any("torch" in name for name in failed)  # the reference is not gated against itself
    assert gates[0]["name"] == "ran" and gates[0]["passed"]


def test_min_fps_gate_per_row() -> None:
    results, ref = judged([TORCH, row(precision="int8", artifact="m.onnx", fps=100.0, batch=8)], {})
    failed = failed_gates(evaluate_gates(results, Thresholds(min_fps=50.0), ref))
    assert failed == ["min-fps torch/cpu/fp32 best.pt bs1"]


def test_min_fps_fails_when_nothing_ran() -> None:
    results = [row(status="skipped", reason="no GPU")]
    failed = failed_gates(evaluate_gates(results, Thresholds(min_fps=1.0), None))
    assert failed == ["ran", "min-fps"]


def test_required_backend_skipped_fails_with_its_reason() -> None:
    trt = row("tensorrt", "tensorrt", "fp16", status="skipped", reason="TensorRT is not installed", artifact="m.engine")
    gates = evaluate_gates([TORCH, trt], Thresholds(require=("tensorrt", "torch")), TORCH)
    by_name = {g["name"]: g for g in gates}
    assert not by_name["require tensorrt"]["passed"]
    assert "TensorRT is not installed" in by_name["require tensorrt"]["detail"]
    assert by_name["require torch"]["passed"]


def test_required_backend_provider_and_failed_rows() -> None:
    cuda = row(provider="cuda", status="skipped", reason="no CUDA GPU")
    broken = row(precision="fp16", status="failed", reason="corrupt", artifact="model.fp16.onnx")
    gates = evaluate_gates([TORCH, ONNX32, cuda, broken], Thresholds(require=("onnxruntime/cpu", "onnxruntime/cuda")), TORCH)
    by_name = {g["name"]: g for g in gates}
    assert not by_name["require onnxruntime/cpu"]["passed"]  # one of its rows failed
    assert "corrupt" in by_name["require onnxruntime/cpu"]["detail"]
    assert not by_name["require onnxruntime/cuda"]["passed"]


def test_without_reference_or_ground_truth_parity_is_not_checked() -> None:
    results, ref = judged([INT8], {})
    gates = evaluate_gates(results, Thresholds(), ref)
    assert ref is None and not failed_gates(gates)
    assert any("not checked" in g["detail"] for g in gates)

    no_gt = [dict(TORCH, dice=None), dict(INT8, dice=None)]
    store = {TORCH["runner_key"]: masks(FULL), INT8["runner_key"]: masks(FULL)}
    results, ref = judged(no_gt, store)
    gates = evaluate_gates(results, Thresholds(), ref, no_accuracy="no masks")
    assert results[1]["dice_drop"] is None and results[1]["agreement"] == 1.0  # agreement needs no ground truth
    assert not failed_gates(gates) and any(g["detail"] == "not checked: no masks" for g in gates)


def test_a_failed_row_fails_the_run_but_a_skipped_one_does_not() -> None:
    skipped = row(provider="cuda", status="skipped", reason="no CUDA GPU")
    assert not failed_gates(evaluate_gates([TORCH, skipped], Thresholds(), TORCH))
    broken = row(precision="fp16", status="failed", reason="corrupt file", artifact="model.fp16.onnx")
    gates = {g["name"]: g for g in evaluate_gates([TORCH, broken], Thresholds(), TORCH)}
    assert not gates["no-failed-rows"]["passed"] and "corrupt file" in gates["no-failed-rows"]["detail"]
