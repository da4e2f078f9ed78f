"""The FP16 and INT8 steps of the export pipeline: build one reduced-precision file and say how.

Each step writes its file into the staging folder and returns the facts for the manifest's
``verification`` entry with the file's score (``Verifier``); the pipeline decides pass or fail.
A step scores its final file once: ONNX Runtime has no fast kernels for the ``int8`` (TensorRT)
file (symmetric INT8 activations), so every extra pass over the verification frames shows in the
export time. That file is scored with the reference Q/DQ run
(``convseg_deploy.ort_session.session_options``), the faster of the two for it.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from convseg_deploy.imaging import logits_to_masks
from convseg_deploy.metrics import image_dice, pooled_dice
from convseg_deploy.exporters.defaults import DROP_CONFIDENCE, calib_method_for
from convseg_deploy.exporters.sensitivity import Score, conv_precisions, failure_reason, keep_sensitive_float, mean_upper_bound


@dataclass
class Verifier:
    """Scores models against FP32 on the verification frames (``run`` gives a file's logits)."""

    ref_logits: np.ndarray
    threshold: float
    truth: np.ndarray | None  # ground-truth masks of the frames, for the Dice drop
    run: Callable[[Path, bool], np.ndarray]  # (file, reference_qdq) -> logits
    scratch: Path  # where in-memory models are written to be run

    def __post_init__(self) -> None:
        self.ref_masks = logits_to_masks(self.ref_logits, self.threshold)
        # per-frame Dice of FP32 against the ground truth: the drop is paired frame by frame
        self.ref_dice = image_dice(self.ref_masks, self.truth) if self.truth is not None else None

    def score(self, model: Path | Any, *, reference_qdq: bool = False) -> Score:
        """Score an ONNX file, or an onnx.ModelProto (written to the scratch folder first);
        ``reference_qdq``: run its Q/DQ as the ONNX spec defines them (``ort_session``)."""
        if not isinstance(model, Path):
            import onnx

            path = self.scratch / "candidate.onnx"
            onnx.save(model, str(path))
            model = path
        logits = self.run(model, reference_qdq)
        masks = logits_to_masks(logits, self.threshold)
        mse = float(np.mean((logits.astype(np.float64) - self.ref_logits) ** 2))
        agreement = float(np.mean(image_dice(masks, self.ref_masks)))
        drop = bound = None
        if self.ref_dice is not None:
            drops = self.ref_dice - image_dice(masks, self.truth)
            drop, bound = float(np.mean(drops)), mean_upper_bound(drops, DROP_CONFIDENCE)
            bound = bound if np.isfinite(bound) else None  # one frame: no bound (resolve_dice_drop refuses to gate on it)
        return Score(agreement, drop, mse, bound, pooled_dice(masks, self.ref_masks), len(masks))


def make_fp16(fp32: Path, path: Path, precision: str, *, batches: Sequence[np.ndarray], verifier: Verifier,
              threads: int | None, log: Callable[[str], None], **_: Any) -> tuple[dict[str, Any], Score]:
    """``model.fp16.onnx`` with the nodes near FP16 overflow (``exporters.fp16_guard``) kept FP32."""
    import onnx

    from convseg_deploy.exporters.fp16 import convert_fp16
    from convseg_deploy.exporters.fp16_guard import FP16_LIMIT, activation_peaks, overflow_nodes

    frames = sum(len(b) for b in batches)
    log(f"converting to FP16 (largest activations over {frames} frames)")
    peaks = activation_peaks(fp32, batches, threads)
    keep = overflow_nodes(onnx.load(str(fp32)), peaks)
    if keep:
        log(f"  fp16: {len(keep)} nodes reach |x| >= {FP16_LIMIT:.0f} and stay FP32: {', '.join(keep)}")
    convert_fp16(fp32, path, {"precision": precision}, keep_fp32=keep)
    return {"fp32_nodes": keep, "largest_activation": max(peaks.values(), default=0.0)}, verifier.score(path)


def make_int8(fp32: Path, path: Path, precision: str, *, batches: Sequence[np.ndarray], verifier: Verifier,
              limit: float, max_dice_drop: float | None, cache: Path, fingerprint: str, method: str,
              exclude: Iterable[str], threads: int | None, log: Callable[[str], None],
              calibrate_all: bool = False) -> tuple[dict[str, Any], Score]:
    """``model.int8.onnx`` or ``model.int8-cpu.onnx``, with the layers that the accuracy target
    needs kept in float (``calibrate_all``: see ``quantize_int8``)."""
    import onnx

    from convseg_deploy.exporters.int8 import TENSORRT_FLAVOUR, quantize_int8

    quantize = functools.partial(quantize_int8, fp32, path, precision, batches, cache=cache, data_fingerprint=fingerprint,
                                 method=method, meta_updates={"precision": precision}, threads=threads,
                                 calibrate_all=calibrate_all)
    exclude = list(exclude)
    log(f"quantizing to {precision} ({calib_method_for(precision, method)} calibration on {sum(len(b) for b in batches)} frames)")
    start = time.perf_counter()
    _, reused = quantize(exclude=exclude)
    seconds = round(time.perf_counter() - start, 1)
    log(f"  {precision}: {'ranges from the cache' if reused else 'calibrated'}, quantized in {seconds:.0f} s")
    reference_qdq = precision == TENSORRT_FLAVOUR
    score_model = functools.partial(verifier.score, reference_qdq=reference_qdq)
    score = score_model(path)  # the file as written (the search scores bypassed copies)
    model = onnx.load(str(path))
    search = keep_sensitive_float(model, score, score_model, limit, max_dice_drop, log)
    if search.float_layers and search.met:
        # quantize again with those layers excluded: the quantizer's own placement around them
        quantize(exclude=exclude + search.float_layers)
        score, model = score_model(path), onnx.load(str(path))
    int8, convs = conv_precisions(model)
    share = len(int8) / max(1, len(convs))
    log(f"  {precision}: {len(int8)} of {len(convs)} convolutions in INT8 ({share:.0%})"
        + (f"; kept in float for accuracy: {', '.join(search.float_layers)}" if search.float_layers and search.met else ""))
    extra: dict[str, Any] = {"calibration_cache_reused": reused, "quantize_seconds": seconds,
                             "qdq_run": "reference" if reference_qdq else "onnxruntime-int8-kernels",
                             "float_layers": search.float_layers if search.met else [], "int8_convs": len(int8), "convs": len(convs),
                             "int8_conv_share": round(share, 4)}
    if not search.met:
        extra["failure"] = failure_reason(search, limit, max_dice_drop)
    return extra, score
