"""The export pipeline: checkpoint -> FP32, FP16 and INT8 ONNX files, each verified, + manifest.

Artifacts are written into a staging folder inside DIR and moved to their final names only when
their check passes, so a model that misses its threshold is never left in DIR. Each export
replaces the folder's model set as a whole (the earlier one is moved aside, see
``install_model_set``) and the manifest is written last. DIR is locked for the export.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from convseg_deploy.artifacts.io_variants import IO_KINDS, IO_TENSOR, WRAPPED_KINDS, variant
from convseg_deploy.artifacts.names import (DEFAULT_MAX_DICE_DROP, DEFAULT_MIN_AGREEMENT, EXPORT_FORMAT, PRECISIONS,
                                            artifact_name)
from convseg_deploy.config import check_image_size
from convseg_deploy.errors import ConvSegError
from convseg_deploy.batching import iter_batches
from convseg_deploy.artifacts.manifest import discover
from convseg_deploy.artifacts.onnx_meta import model_opset, load_onnx
from convseg_deploy.fsutil import ensure_dir, run_lock, sha256_file, write_json
from convseg_deploy.imaging import preprocess
from convseg_deploy.exporters.calibration import CALIB_DATA_NEEDED, calibration_batches, load_frames
from convseg_deploy.exporters.defaults import (AUTO_DICE_DROP, CALIB_METHOD_BY_FLAVOUR, DEFAULT_CALIB_COUNT, DEFAULT_CALIB_METHOD,
                                               DEFAULT_VERIFY_COUNT, DROP_CONFIDENCE, FP32_PARITY_FRAMES, MIN_BOUND_FRAMES,
                                               calib_method_for)
from convseg_deploy.exporters.dependencies import check_export_dependencies
from convseg_deploy.exporters.onnx_export import DEFAULT_OPSET, MAX_OPSET, check_opset, export_fp32, run_onnx
from convseg_deploy.exporters.precision_steps import Verifier, make_fp16, make_int8

MAX_FP32_REL_ERROR = 1e-4


def resolve_dice_drop(max_dice_drop: float | str | None, frames: Any, calib_data: Any) -> tuple[float | None, str]:
    """The Dice-drop limit the checks apply, and a note saying which and why."""
    if max_dice_drop is None:
        return None, "not checked (switched off)"
    explicit = max_dice_drop != AUTO_DICE_DROP
    if frames.verify_masks is None:
        if explicit:
            raise ConvSegError(f"--max-dice-drop needs ground-truth masks for the verification frames: {calib_data} has "
                               "none (use a folder with images/ and masks/)")
        return None, f"not checked: {calib_data} has no masks/ (agreement with FP32 only)"
    if len(frames.verify) < MIN_BOUND_FRAMES:
        if explicit:
            raise ConvSegError(f"--max-dice-drop needs at least {MIN_BOUND_FRAMES} verification frames for its bound, "
                               f"{frames.source} gives {len(frames.verify)}: raise --verify-count or add frames")
        return None, f"not checked: fewer than {MIN_BOUND_FRAMES} verification frames"
    limit = DEFAULT_MAX_DICE_DROP if not explicit else float(max_dice_drop)
    if not 0 <= limit <= 1:
        raise ConvSegError(f"--max-dice-drop must be between 0 and 1, got {limit}")
    return limit, (f"upper {DROP_CONFIDENCE:.0%} bound of the mean per-frame drop over {len(frames.verify)} frames "
                   f"<= {limit}")


def relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    """Largest absolute difference relative to the largest reference magnitude."""
    return float(np.max(np.abs(actual - expected)) / max(float(np.max(np.abs(expected))), 1e-12))


def _run_torch(model: Any, frames: np.ndarray, batch: int) -> np.ndarray:
    import torch

    with torch.inference_mode():
        return np.concatenate([model(torch.from_numpy(preprocess(frames[sl], model.preprocess))).numpy()
                               for sl in iter_batches(len(frames), batch)])


def install_model_set(out_dir: Path, files: list[Path], manifest: dict[str, Any]) -> Path | None:
    """Make ``files`` (verified, in the staging folder) the folder's whole model set.

    The earlier manifest goes first, then every model file and engine sidecar beside it, into
    ``superseded-<time>/``: no file of an earlier export is left looking current. The manifest
    is written last. Returns the folder the earlier files went to (None when there were none).
    """
    old = discover(out_dir) + [p for p in out_dir.glob("*.engine.json") if p.is_file()]
    old = ([out_dir / "manifest.json"] if (out_dir / "manifest.json").is_file() else []) + old
    aside = None
    try:
        if old:
            aside = out_dir / f"superseded-{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%S.%fZ')}"
            aside.mkdir()
            for path in old:
                os.replace(path, aside / path.name)
        for path in files:
            os.replace(path, out_dir / path.name)
    except OSError as exc:
        raise ConvSegError(f"cannot install the exported models into {out_dir}: {exc.strerror or exc}") from None
    write_json(out_dir / "manifest.json", manifest)
    return aside


def _input_shape(static_batch: bool, dynamic_size: bool, size: tuple[int, int]) -> list[int | str]:
    return ["batch" if not static_batch else 1, 3, *(("height", "width") if dynamic_size else size)]


def _frames_variant(src: Path, precision: str, io: str, frames: np.ndarray, ref_masks: np.ndarray,
                    verification: dict[str, Any], threads: int | None, failures: list[str],
                    log: Callable[[str], None]) -> tuple[list[dict[str, Any]], list[Path]]:
    """The I/O variant ``io`` of ``src`` (frames.<precision>.onnx, holoscan..., deepstream...) staged
    next to the tensor model, fed as its framework feeds it and checked against the FP32 masks:
    (its manifest entry, its staged file), both empty on a miss."""
    from convseg_deploy.exporters.frames_io import FRAMES_MIN_AGREEMENT_FP32, frames_name, wrap_and_check

    staged = src.with_name(frames_name(precision, io))
    limit = FRAMES_MIN_AGREEMENT_FP32 if precision == "fp32" else float(verification["threshold"])
    check = wrap_and_check(src, staged, frames, ref_masks, limit, threads, io)
    agreement = check["agreement"]
    log(f"  {precision} {io} I/O ({variant(io).fed_by}): mask agreement with FP32 {agreement:.4f} (minimum {limit})")
    if not check["passed"]:
        failures.append(f"{staged.name}: mask agreement {agreement:.4f} with FP32 is below the minimum {limit}")
        return [], []
    model = load_onnx(staged)
    shapes = {v.name: [d.dim_value or d.dim_param for d in v.type.tensor_type.shape.dim] for v in model.graph.input}
    return [{"file": staged.name, "sha256": sha256_file(staged), "size_bytes": staged.stat().st_size, "precision": precision,
             "io": io, "input_shapes": shapes, "outputs": [o.name for o in model.graph.output],
             "verification": {"agreement_vs_fp32": agreement, "threshold": limit, "images": int(len(frames))}}], [staged]


def export_artifacts(checkpoint: str | Path, out_dir: str | Path, precisions: Sequence[str] = PRECISIONS, *,
                     calib_data: str | Path | None = None, calib_count: int = DEFAULT_CALIB_COUNT, calib_batch: int = 1,
                     calib_method: str = DEFAULT_CALIB_METHOD, calib_cache: str | Path | None = None,
                     image_size: tuple[int, int] | None = None, opset: int = DEFAULT_OPSET, static_batch: bool = False,
                     dynamic_size: bool = False, exclude: Iterable[str] = (), min_agreement: float | None = None,
                     max_dice_drop: float | str | None = AUTO_DICE_DROP, verify_count: int = DEFAULT_VERIFY_COUNT,
                     threads: int | None = None,
                     io: Sequence[str] = ("tensor",), log: Callable[[str], None] = print) -> dict[str, Any]:
    """Export, verify and list the artifacts; raises ConvSegError naming every failed check
    (after writing the manifest of those that passed).

    ``min_agreement`` overrides the default mask agreement with FP32 per precision; with
    ``max_dice_drop`` the Dice against the verification frames' ground truth may fall at most that
    much below FP32's, judged by the upper confidence bound of the mean per-frame drop
    (``resolve_dice_drop``: "auto" is the default limit where the frames have masks). An INT8
    model that misses either keeps its most sensitive layers in float until it meets them
    (``exporters.sensitivity``). ``io`` "tensor" writes model.<p>.onnx (float32 NCHW in, logits
    out); "frames", "holoscan", "deepstream" write <io>.<p>.onnx, the variants of ``convseg_deploy.artifacts.io_variants``."""
    from convseg_deploy.checkpoint import library_versions, model_from_checkpoint, read_checkpoint

    if not io or any(v not in IO_KINDS for v in io):
        raise ConvSegError(f"--io {','.join(io) or '(none)'}: use a comma list of {', '.join(IO_KINDS)}")
    unknown = [p for p in precisions if p not in PRECISIONS]
    if unknown or not precisions:
        raise ConvSegError(f"unknown precision {unknown[0] if unknown else '(none)'!r}: use a comma list of {', '.join(PRECISIONS)}")
    wants_int8 = any(p.startswith("int8") for p in precisions)
    if opset > MAX_OPSET and wants_int8:
        raise ConvSegError(f"opset {opset} cannot carry INT8: ONNX Runtime's static quantization supports opset <= {MAX_OPSET}")
    check_opset(opset)
    if wants_int8 and calib_data is None:  # before any work, like the packages below
        raise ConvSegError(CALIB_DATA_NEEDED)
    if max_dice_drop not in (None, AUTO_DICE_DROP) and not 0 <= float(max_dice_drop) <= 1:
        raise ConvSegError(f"--max-dice-drop must be between 0 and 1, got {max_dice_drop}")
    check_export_dependencies(precisions, dice_drop_bound=max_dice_drop is not None)
    checkpoint = Path(checkpoint)
    ckpt = read_checkpoint(checkpoint)
    model = model_from_checkpoint(ckpt, checkpoint)
    size = check_image_size(*(image_size or model.preprocess.size))
    spec = model.preprocess.with_size(*size)
    model.preprocess = spec
    out_dir = ensure_dir(out_dir)
    # FP16 reads the calibration frames too when there are real ones (its overflow guard)
    frames = load_frames(calib_data, size, calib_count=calib_count, calib_batch=1 if static_batch else calib_batch,
                         verify_count=verify_count,
                         need_calibration=wants_int8 or ("fp16" in precisions and calib_data is not None))
    max_dice_drop, drop_check = resolve_dice_drop(max_dice_drop, frames, calib_data)
    # only reduced precisions and I/O variants are scored on every verification frame
    scored = any(p != "fp32" for p in precisions) or any(k in io for k in WRAPPED_KINDS)
    checked = frames.verify if scored else frames.verify[:FP32_PARITY_FRAMES]
    truth = None if frames.verify_masks is None else frames.verify_masks[:len(checked)]
    import onnx
    import onnxruntime
    import torch

    base_meta = {"preprocess": spec.to_dict(), "threshold": float(model.threshold), "model": model.config.to_dict(),
                 "source_checkpoint": checkpoint.name, "source_sha256": sha256_file(checkpoint),
                 "versions": {"torch": str(torch.__version__), "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__,
                              "convseg_deploy": library_versions()["convseg_deploy"]}}
    batch = 1 if static_batch else 8
    results: list[dict[str, Any]] = []
    frames_results: list[dict[str, Any]] = []
    failures: list[str] = []
    lock = contextlib.ExitStack()
    lock.enter_context(run_lock(out_dir))  # a second export into this folder fails here, before any work
    stage = Path(tempfile.mkdtemp(prefix=".export-", dir=out_dir))
    try:
        fp32 = stage / artifact_name("fp32")
        log(f"exporting FP32 ONNX (opset {opset}, {size[0]}x{size[1]})")
        export_fp32(model, fp32, size, {**base_meta, "precision": "fp32"}, opset=opset,
                    dynamic_batch=not static_batch, dynamic_size=dynamic_size)
        log(f"  checks on {frames.source}; Dice drop {drop_check}")
        ref_logits = run_onnx(fp32, checked, threads, batch)
        parity = checked[:FP32_PARITY_FRAMES]
        rel = relative_error(ref_logits[:len(parity)], _run_torch(model, parity, batch))
        checks = {"fp32": ({"max_relative_error_vs_torch": rel, "threshold": MAX_FP32_REL_ERROR},
                           rel <= MAX_FP32_REL_ERROR, f"relative error {rel:.2e} vs PyTorch exceeds {MAX_FP32_REL_ERROR:.0e}")}
        log(f"  fp32: relative error vs PyTorch {rel:.2e} (limit {MAX_FP32_REL_ERROR:.0e})")
        batches = calibration_batches(frames.calib, spec, 1 if static_batch else calib_batch) if len(frames.calib) else []
        verifier = Verifier(ref_logits, model.threshold, truth,
                            lambda path, reference_qdq: run_onnx(path, checked, threads, batch,
                                                                 reference_qdq=reference_qdq), stage)
        cache = Path(calib_cache) if calib_cache else out_dir / "calibration-cache.json"
        # int8 calibrates int8-cpu's tensors too where both flavours use one range method
        shared_ranges = "int8-cpu" in precisions and len({calib_method_for(f, calib_method) for f in CALIB_METHOD_BY_FLAVOUR}) == 1
        for precision in [p for p in PRECISIONS if p in precisions and p != "fp32"]:
            limit = DEFAULT_MIN_AGREEMENT[precision] if min_agreement is None else min_agreement
            path = stage / artifact_name(precision)
            build = make_fp16 if precision == "fp16" else make_int8
            extra, score = build(fp32, path, precision, batches=batches or calibration_batches(frames.verify, spec, 1),
                                 verifier=verifier, limit=limit, max_dice_drop=max_dice_drop, cache=cache,
                                 fingerprint=frames.fingerprint, method=calib_method, exclude=exclude, threads=threads,
                                 log=log, calibrate_all=shared_ranges)
            log(f"  {precision}: {score.describe()} (minimum agreement {limit}"
                + ("" if max_dice_drop is None else f", largest Dice drop {max_dice_drop}") + ")")
            meets = score.meets(limit, max_dice_drop)
            why = extra.pop("failure", None) or (
                f"mask agreement {score.agreement:.4f} is {limit - score.agreement:.4f} below the minimum {limit}"
                if score.agreement < limit else f"{score.describe()}: the bound exceeds --max-dice-drop {max_dice_drop}")
            checks[precision] = ({"agreement_vs_fp32": score.agreement, "threshold": limit,
                                  "pooled_agreement_vs_fp32": score.pooled_agreement, "dice_drop": score.dice_drop,
                                  "dice_drop_bound": score.dice_drop_bound, "bound_confidence": DROP_CONFIDENCE,
                                  "max_dice_drop": max_dice_drop, "dice_drop_check": drop_check, **extra}, meets, why)
        passed = []
        for precision in [p for p in PRECISIONS if p in checks]:
            verification, ok, why = checks[precision]
            if precision not in precisions:
                continue  # fp32 was only the source of the others
            if not ok:
                failures.append(f"{precision}: {why}")
                continue
            shape = _input_shape(static_batch, dynamic_size, size)
            for kind in (k for k in WRAPPED_KINDS if k in io):
                entries, staged = _frames_variant(stage / artifact_name(precision), precision, kind, checked,
                                                  verifier.ref_masks, verification, threads, failures, log)
                frames_results += entries
                passed += staged
            if IO_TENSOR not in io:
                continue
            path = stage / artifact_name(precision)
            passed.append(path)
            results.append({"file": path.name, "sha256": sha256_file(path), "size_bytes": path.stat().st_size,
                            "precision": precision, "input_shapes": {"image": shape},
                            "output_shapes": {"logits": [shape[0], 1, *shape[2:]]}, "opset": model_opset(load_onnx(path)),
                            "verification": {**verification, "images": int(len(checked)),
                                                             "frames": frames.source}})
        manifest = {"format": EXPORT_FORMAT, "source_checkpoint": str(checkpoint), "source_sha256": base_meta["source_sha256"],
                    "preprocess": spec.to_dict(), "threshold": float(model.threshold), "model": model.config.to_dict(),
                    "versions": base_meta["versions"], "artifacts": results}
        if frames_results:
            manifest["frames_artifacts"] = frames_results
        if results or frames_results:
            retired = install_model_set(out_dir, passed, manifest)
            if retired:
                log(f"moved the earlier export's files aside into {retired}")
    except OSError as exc:  # a full disk while writing into the staging folder: nothing reached DIR
        raise ConvSegError(f"cannot write the export into {out_dir}: {exc.strerror or exc}") from None
    finally:
        shutil.rmtree(stage, ignore_errors=True)
        lock.close()
    if failures:
        raise ConvSegError("export check failed (the failing model was not written): " + "; ".join(failures))
    return manifest
