"""The export pipeline: checkpoint -> FP32, FP16 and INT8 ONNX files, each verified, + manifest.

Artifacts are written into a staging folder inside DIR and moved to their final names only when
their check passes, so a model that misses its threshold is never left in DIR. The manifest is
written last.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from convseg_deploy.config import check_image_size
from convseg_deploy.errors import ConvSegError
from convseg_deploy.evaluate import iter_batches
from convseg_deploy.fsutil import ensure_dir, sha256_file, write_json
from convseg_deploy.imaging import logits_to_masks, preprocess
from convseg_deploy.metrics import mean_dice
from exporters.calibration import calibration_batches, load_frames
from exporters.onnx_export import DEFAULT_OPSET, MAX_OPSET, check_opset, export_fp32

PRECISIONS = ("fp32", "fp16", "int8", "int8-cpu")
DEFAULT_MIN_AGREEMENT = {"fp16": 0.99, "int8": 0.97, "int8-cpu": 0.97}
MAX_FP32_REL_ERROR = 1e-4
MANIFEST_FORMAT = "convseg-deploy/manifest/v1"
IO_KINDS = ("tensor", "frames")


def artifact_name(precision: str) -> str:
    return f"model.{precision}.onnx"


def relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    """Largest absolute difference relative to the largest reference magnitude."""
    return float(np.max(np.abs(actual - expected)) / max(float(np.max(np.abs(expected))), 1e-12))


def _run_onnx(path: Path, frames: np.ndarray, threads: int | None, batch: int) -> np.ndarray:
    from convseg_deploy.runtime.onnxruntime_runner import OnnxRuntimeRunner

    with OnnxRuntimeRunner(path, threads=threads) as runner:
        return np.concatenate([runner.infer(preprocess(frames[sl], runner.preprocess)) for sl in iter_batches(len(frames), batch)])


def _run_torch(model: Any, frames: np.ndarray, batch: int) -> np.ndarray:
    import torch

    with torch.inference_mode():
        return np.concatenate([model(torch.from_numpy(preprocess(frames[sl], model.preprocess))).numpy()
                               for sl in iter_batches(len(frames), batch)])


def _input_shape(static_batch: bool, dynamic_size: bool, size: tuple[int, int]) -> list[int | str]:
    return ["batch" if not static_batch else 1, 3, *(("height", "width") if dynamic_size else size)]


def _frames_variant(src: Path, out_dir: Path, precision: str, frames: np.ndarray, ref_masks: np.ndarray,
                    verification: dict[str, Any], threads: int | None, failures: list[str],
                    log: Callable[[str], None]) -> list[dict[str, Any]]:
    """frames.<precision>.onnx next to the tensor model, checked against the FP32 masks; [] on a miss."""
    from exporters.frames_io import FRAMES_MIN_AGREEMENT_FP32, frames_name, wrap_and_check

    staged = src.with_name(frames_name(precision))
    limit = FRAMES_MIN_AGREEMENT_FP32 if precision == "fp32" else float(verification["threshold"])
    check = wrap_and_check(src, staged, frames, ref_masks, limit, threads)
    agreement = check["agreement"]
    log(f"  {precision} frames-in/masks-out: mask agreement with FP32 {agreement:.4f} (minimum {limit})")
    if not check["passed"]:
        failures.append(f"{staged.name}: mask agreement {agreement:.4f} with FP32 is below the minimum {limit}")
        return []
    final = out_dir / staged.name
    shutil.move(str(staged), final)
    return [{"file": final.name, "sha256": sha256_file(final), "size_bytes": final.stat().st_size, "precision": precision,
             "io": "frames", "verification": {"agreement_vs_fp32": agreement, "threshold": limit, "images": int(len(frames))}}]


def export_artifacts(checkpoint: str | Path, out_dir: str | Path, precisions: Sequence[str] = PRECISIONS, *,
                     calib_data: str | Path | None = None, calib_count: int = 200, calib_batch: int = 1,
                     calib_method: str = "minmax", calib_cache: str | Path | None = None,
                     image_size: tuple[int, int] | None = None, opset: int = DEFAULT_OPSET, static_batch: bool = False,
                     dynamic_size: bool = False, exclude: Iterable[str] = (), min_agreement: float | None = None,
                     verify_count: int = 16, threads: int | None = None, io: Sequence[str] = ("tensor",),
                     log: Callable[[str], None] = print) -> dict[str, Any]:
    """Export, verify and list the artifacts; raises ConvSegError naming every failed check
    (after writing the manifest of those that passed). ``io`` "tensor" writes model.<p>.onnx
    (float32 NCHW in, logits out), "frames" frames.<p>.onnx (uint8 frames in, masks out)."""
    from convseg_deploy.checkpoint import library_versions, model_from_checkpoint, read_checkpoint
    from exporters.fp16 import convert_fp16
    from exporters.int8 import quantize_int8

    if not io or any(v not in IO_KINDS for v in io):
        raise ConvSegError(f"--io {','.join(io) or '(none)'}: use tensor, frames or tensor,frames")
    unknown = [p for p in precisions if p not in PRECISIONS]
    if unknown or not precisions:
        raise ConvSegError(f"unknown precision {unknown[0] if unknown else '(none)'!r}: use a comma list of {', '.join(PRECISIONS)}")
    wants_int8 = any(p.startswith("int8") for p in precisions)
    if opset > MAX_OPSET and wants_int8:
        raise ConvSegError(f"opset {opset} cannot carry INT8: ONNX Runtime's static quantization supports opset <= {MAX_OPSET}")
    check_opset(opset)
    checkpoint = Path(checkpoint)
    ckpt = read_checkpoint(checkpoint)
    model = model_from_checkpoint(ckpt, checkpoint)
    size = check_image_size(*(image_size or model.preprocess.size))
    spec = model.preprocess.with_size(*size)
    model.preprocess = spec
    out_dir = ensure_dir(out_dir)
    frames = load_frames(calib_data, size, calib_count=calib_count, calib_batch=1 if static_batch else calib_batch,
                         verify_count=verify_count, need_calibration=wants_int8)
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
    stage = Path(tempfile.mkdtemp(prefix=".export-", dir=out_dir))
    try:
        fp32 = stage / artifact_name("fp32")
        log(f"exporting FP32 ONNX (opset {opset}, {size[0]}x{size[1]})")
        export_fp32(model, fp32, size, {**base_meta, "precision": "fp32"}, opset=opset,
                    dynamic_batch=not static_batch, dynamic_size=dynamic_size)
        ref_logits = _run_onnx(fp32, frames.verify, threads, batch)
        ref_masks = logits_to_masks(ref_logits, model.threshold)
        rel = relative_error(ref_logits, _run_torch(model, frames.verify, batch))
        checks = {"fp32": ({"max_relative_error_vs_torch": rel, "threshold": MAX_FP32_REL_ERROR},
                           rel <= MAX_FP32_REL_ERROR, f"relative error {rel:.2e} vs PyTorch exceeds {MAX_FP32_REL_ERROR:.0e}")}
        log(f"  fp32: relative error vs PyTorch {rel:.2e} (limit {MAX_FP32_REL_ERROR:.0e})")
        batches = calibration_batches(frames.calib, spec, 1 if static_batch else calib_batch) if wants_int8 else []
        cache = Path(calib_cache) if calib_cache else out_dir / "calibration-cache.json"
        for precision in [p for p in PRECISIONS if p in precisions and p != "fp32"]:
            path = stage / artifact_name(precision)
            meta = {"precision": precision}
            extra: dict[str, Any] = {}
            if precision == "fp16":
                log("converting to FP16")
                convert_fp16(fp32, path, meta)
            else:
                log(f"quantizing to {precision} ({calib_method} calibration on {len(batches) * len(batches[0])} frames)")
                start = time.perf_counter()
                _, reused = quantize_int8(fp32, path, precision, batches, cache=cache, data_fingerprint=frames.fingerprint,
                                          method=calib_method, exclude=exclude, meta_updates=meta, threads=threads)
                extra.update(calibration_cache_reused=reused, quantize_seconds=round(time.perf_counter() - start, 1))
                log(f"  {precision}: {'ranges from the cache' if reused else 'calibrated'}, quantized in {extra['quantize_seconds']:.0f} s")
            agreement = mean_dice(logits_to_masks(_run_onnx(path, frames.verify, threads, batch), model.threshold), ref_masks)
            limit = DEFAULT_MIN_AGREEMENT[precision] if min_agreement is None else min_agreement
            log(f"  {precision}: mask agreement with FP32 {agreement:.4f} (minimum {limit})")
            checks[precision] = ({"agreement_vs_fp32": agreement, "threshold": limit, **extra}, agreement >= limit,
                                 f"mask agreement {agreement:.4f} is {limit - agreement:.4f} below the minimum {limit}")
        for precision in [p for p in PRECISIONS if p in checks]:
            verification, passed, why = checks[precision]
            if precision not in precisions:
                continue  # fp32 was only the source of the others
            if not passed:
                failures.append(f"{precision}: {why}")
                continue
            shape = _input_shape(static_batch, dynamic_size, size)
            if "frames" in io:
                frames_results += _frames_variant(stage / artifact_name(precision), out_dir, precision, frames.verify,
                                                  ref_masks, verification, threads, failures, log)
            if "tensor" not in io:
                continue
            final = out_dir / artifact_name(precision)
            shutil.move(str(stage / artifact_name(precision)), final)
            results.append({"file": final.name, "sha256": sha256_file(final), "size_bytes": final.stat().st_size,
                            "precision": precision, "input_shapes": {"image": shape},
                            "output_shapes": {"logits": [shape[0], 1, *shape[2:]]}, "opset": opset,
                            "verification": {**verification, "images": int(len(frames.verify)),
                                                             "frames": frames.source}})
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    manifest = {"format": MANIFEST_FORMAT, "source_checkpoint": str(checkpoint), "source_sha256": base_meta["source_sha256"],
                "preprocess": spec.to_dict(), "threshold": float(model.threshold), "model": model.config.to_dict(),
                "versions": base_meta["versions"], "artifacts": results}
    if frames_results:
        manifest["frames_artifacts"] = frames_results
    if results or frames_results:
        write_json(out_dir / "manifest.json", manifest)
    if failures:
        raise ConvSegError("export check failed (the failing model was not written): " + "; ".join(failures))
    return manifest
