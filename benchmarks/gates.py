"""Judging, separated from running: pure functions from collected results to verdicts.

``pick_reference`` chooses what parity is measured against (PyTorch FP32 when a checkpoint
ran, else an FP32 ONNX), ``compare`` adds each row's Dice drop and mask agreement with it,
``evaluate_gates`` turns the thresholds into named pass/fail gates. Nothing here runs a model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from convseg_deploy.artifacts.names import DEFAULT_MAX_DICE_DROP, DEFAULT_MIN_AGREEMENT
from convseg_deploy.metrics import mean_dice

# Reference preference among rows that ran: (backend, provider), all at fp32.
REFERENCE_ORDER = (("torch", "cpu"), ("torch", "cuda"), ("onnxruntime", "cpu"), ("onnxruntime", "cuda"),
                   ("onnxruntime", "tensorrt"), ("tensorrt", "tensorrt"))

Result = dict[str, Any]
Gate = dict[str, Any]


@dataclass(frozen=True)
class PackedMasks:
    """Boolean masks stored at one bit per pixel: every runner's predictions are kept until
    judging, and a Kvasir-sized set would otherwise take 65 MB per runner."""

    bits: np.ndarray
    shape: tuple[int, ...]

    @classmethod
    def pack(cls, masks: np.ndarray) -> PackedMasks:
        masks = np.asarray(masks, dtype=bool)
        return cls(np.packbits(masks, axis=None), masks.shape)

    def unpack(self) -> np.ndarray:
        return np.unpackbits(self.bits, count=int(np.prod(self.shape))).reshape(self.shape).astype(bool)


@dataclass(frozen=True)
class Thresholds:
    """max_dice_drop: largest allowed (reference Dice - row Dice). min_agreement: smallest
    allowed mean Dice between a row's masks and the reference's. min_fps: model-only images
    per second every row must reach (None: not checked). require: backends (or
    backend/provider) that must have run."""

    max_dice_drop: float = DEFAULT_MAX_DICE_DROP
    min_agreement: float = min(DEFAULT_MIN_AGREEMENT.values())  # every precision's export minimum holds
    min_fps: float | None = None
    require: tuple[str, ...] = ()


def label(result: Result, batch: bool = False) -> str:
    """``onnxruntime/cpu/int8 model.int8.onnx`` (plus `` bs8`` with ``batch``)."""
    if not result.get("artifact"):  # a placeholder: the backend had nothing to run
        return result["backend"]
    text = f"{result['backend']}/{result['provider']}/{result['precision']} {Path(result['artifact']).name}"
    return f"{text} bs{result['batch_size']}" if batch else text


def pick_reference(results: list[Result]) -> Result | None:
    """The first fp32 row that ran, in REFERENCE_ORDER; None when none did."""
    ok = [r for r in results if r["status"] == "ok" and r["precision"] == "fp32"]
    for backend, provider in REFERENCE_ORDER:
        for row in ok:
            if row["backend"] == backend and row["provider"] == provider:
                return row
    return None


def agreement(masks: PackedMasks | None, reference: PackedMasks | None) -> float | None:
    """Mean per-image Dice between two runners' masks; None when either is missing or they
    were predicted at different input sizes."""
    if masks is None or reference is None or masks.shape != reference.shape:
        return None
    return mean_dice(masks.unpack(), reference.unpack())


def compare(results: list[Result], masks: dict[str, PackedMasks], reference: Result | None) -> list[Result]:
    """Copies of ``results`` with ``dice_drop`` and ``agreement`` against ``reference``."""
    ref_masks = masks.get(reference["runner_key"]) if reference else None
    cache: dict[str, float | None] = {}
    out = []
    for row in results:
        row = dict(row)
        if reference is not None and row["status"] == "ok":
            key = row["runner_key"]
            if key not in cache:  # one agreement per runner, shared by its batch sizes
                cache[key] = agreement(masks.get(key), ref_masks)
            row["agreement"] = cache[key]
            if row["dice"] is not None and reference["dice"] is not None:
                row["dice_drop"] = reference["dice"] - row["dice"]
        out.append(row)
    return out


def _gate(name: str, passed: bool, detail: str) -> Gate:
    return {"name": name, "passed": bool(passed), "detail": detail}


def _parity_gates(results: list[Result], t: Thresholds, reference: Result | None, no_accuracy: str | None) -> list[Gate]:
    if reference is None:
        return [_gate("parity", True, "not checked: no fp32 reference ran (PyTorch fp32 from --checkpoint, or an fp32 ONNX)")]
    gates = []
    seen: set[str] = set()
    for row in results:
        if row["status"] != "ok" or row["runner_key"] in seen or row["runner_key"] == reference["runner_key"]:
            continue
        seen.add(row["runner_key"])
        if row["dice_drop"] is not None:
            gates.append(_gate(f"max-dice-drop {label(row)}", row["dice_drop"] <= t.max_dice_drop,
                               f"Dice {row['dice']:.4f} vs reference {reference['dice']:.4f}: drop "
                               f"{row['dice_drop']:+.4f} (allowed {t.max_dice_drop})"))
        if row["agreement"] is not None:
            gates.append(_gate(f"min-agreement {label(row)}", row["agreement"] >= t.min_agreement,
                               f"mask agreement with {label(reference)} {row['agreement']:.4f} (needed {t.min_agreement})"))
        elif str(row.get("accuracy_reason") or "").startswith("accuracy pass failed"):
            gates.append(_gate(f"min-agreement {label(row)}", False, row["accuracy_reason"]))
        else:  # an artifact exported at another input size predicts masks of another shape
            gates.append(_gate(f"min-agreement {label(row)}", True,
                               f"not checked: input size differs from {label(reference)}"))
    if no_accuracy:
        gates.append(_gate("max-dice-drop", True, f"not checked: {no_accuracy}"))
    return gates


def _speed_gates(results: list[Result], min_fps: float) -> list[Gate]:
    ok = [r for r in results if r["status"] == "ok"]
    if not ok:
        return [_gate("min-fps", False, "no row ran, so no speed was measured")]
    return [_gate(f"min-fps {label(r, batch=True)}", r["fps"] >= min_fps, f"{r['fps']:.2f} FPS (needed {min_fps:g})")
            for r in ok]


def _require_gates(results: list[Result], require: tuple[str, ...]) -> list[Gate]:
    gates = []
    for name in require:
        backend, _, provider = name.partition("/")
        rows = [r for r in results if r["backend"] == backend and (not provider or r["provider"] == provider)]
        ok = [r for r in rows if r["status"] == "ok"]
        bad = [r for r in rows if r["status"] != "ok"]
        if ok and not any(r["status"] == "failed" for r in rows):
            detail = f"{len(ok)} rows ran" + (f", {len(bad)} skipped" if bad else "")
        elif not rows:
            detail = "no rows planned for it (check --backends, --providers and --artifacts)"
        else:
            detail = f"{bad[0]['status']}: {bad[0]['reason']}"
        gates.append(_gate(f"require {name}", bool(ok) and not any(r["status"] == "failed" for r in rows), detail))
    return gates


def evaluate_gates(results: list[Result], thresholds: Thresholds, reference: Result | None,
                   no_accuracy: str | None = None) -> list[Gate]:
    """Every gate with its verdict; ``results`` must already have been through ``compare``."""
    ok = sum(r["status"] == "ok" for r in results)
    gates = [_gate("ran", ok > 0, f"{ok} of {len(results)} rows ran")]
    # A row that broke (as opposed to one skipped for a missing backend) makes the run red: a
    # bench that CI trusts must not pass with a model that failed to load or run.
    broken = [r for r in results if r["status"] == "failed"]
    gates.append(_gate("no-failed-rows", not broken,
                       f"{len(broken)} rows failed, first {label(broken[0], batch=True)}: {broken[0]['reason']}"
                       if broken else "no row failed"))
    gates += _parity_gates(results, thresholds, reference, no_accuracy)
    if thresholds.min_fps is not None:
        gates += _speed_gates(results, thresholds.min_fps)
    gates += _require_gates(results, thresholds.require)
    return gates


def failed_gates(gates: list[Gate]) -> list[str]:
    """Names of the gates that did not pass."""
    return [g["name"] for g in gates if not g["passed"]]
