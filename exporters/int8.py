"""FP32 ONNX -> INT8 Q/DQ ONNX with ONNX Runtime's static quantization, in two flavours.

* ``int8`` (for TensorRT): activations INT8 symmetric (zero point 0), weights INT8 symmetric per
  channel: the only form TensorRT's explicit quantization accepts.
* ``int8-cpu`` (for ONNX Runtime on CPUs): activations UINT8 asymmetric, weights INT8 per
  channel: the VNNI fast path (symmetric INT8 activations run slower than FP32 there).

Calibration runs once: the tensor ranges go to a cache file that serves both flavours and later
exports, keyed by the FP32 model and the calibration data so a stale cache is never reused.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import logging
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from convseg_deploy.artifacts.names import INPUT_NAME, OUTPUT_NAME
from convseg_deploy.errors import ConvSegError
from convseg_deploy.fsutil import atomic_path, sha256_file, write_json
from convseg_deploy.artifacts.onnx_meta import get_metadata, set_metadata
from exporters.onnx_export import save_checked

FLAVOURS = ("int8", "int8-cpu")
CALIB_METHODS = ("minmax", "entropy", "percentile")


class BatchReader:
    """ONNX Runtime CalibrationDataReader over preprocessed float32 batches."""

    def __init__(self, batches: Sequence[np.ndarray]) -> None:
        self.batches = list(batches)
        self.index = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.index >= len(self.batches):
            return None
        self.index += 1
        return {INPUT_NAME: self.batches[self.index - 1]}

    def rewind(self) -> None:
        self.index = 0

    def __len__(self) -> int:
        return len(self.batches)


def float_nodes(model: Any, patterns: Iterable[str] = ()) -> list[str]:
    """Nodes kept in float: those reading the image (the first convolutions), the node that
    writes the logits (the head: quantising logits hurts masks most), and any node whose name
    matches one of ``patterns`` (fnmatch)."""
    patterns = list(patterns)
    keep = []
    for node in model.graph.node:
        if INPUT_NAME in node.input or OUTPUT_NAME in node.output or any(fnmatch.fnmatch(node.name, p) for p in patterns):
            keep.append(node.name)
    return keep


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """ONNX Runtime's quantizer logs advice through the root logger; keep it off the terminal."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def _cache_key(fp32_path: Path, fingerprint: str, method: str) -> dict[str, str]:
    return {"model_sha256": sha256_file(fp32_path), "data": fingerprint, "method": method}


def _prepare_cache(cache: Path, key: dict[str, str]) -> None:
    """Remove a range cache that was computed for another model, data set or method."""
    key_file = cache.with_name(cache.name + ".key")
    stale = cache.exists() and (not key_file.exists() or json.loads(key_file.read_text()) != key)
    if stale:
        cache.unlink()
    if not cache.exists():
        key_file.unlink(missing_ok=True)


def _ort_method(name: str) -> Any:
    """ONNX Runtime's CalibrationMethod for one of CALIB_METHODS."""
    from onnxruntime.quantization import CalibrationMethod

    return {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
            "percentile": CalibrationMethod.Percentile}[name]


def calibrate(fp32_path: Path, batches: Sequence[np.ndarray], method: str, cache: Path, threads: int | None) -> None:
    """Tensor ranges of ``fp32_path`` over ``batches`` into ``cache`` (ONNX Runtime's cache format).

    ``quantize_static`` would calibrate by itself, but it runs the calibration model with every
    graph optimisation off (ORT_DISABLE_ALL): convolutions then go through im2col, which for the
    full-resolution 11x11 CFR branch at 256x256 needs GBs (over 10 GB resident for the resnet50
    model on 200 frames here, and about 8 minutes, against about 2 GB and 6.5 minutes here).
    Optimisations never change the values of graph outputs, and the ranges are graph outputs
    (ReduceMin/ReduceMax of every calibrated tensor), so the same calibration model runs here in an
    optimised session; ``quantize_static`` then reads the ranges from the cache.
    """
    import tempfile

    import onnxruntime as ort
    from onnxruntime.quantization.calibrate import create_calibrator, save_tensors_data
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    from convseg_deploy.runtime.onnxruntime_runner import session_options

    op_types = sorted(set(QLinearOpsRegistry) | set(QDQRegistry))  # what quantize_static calibrates
    with tempfile.TemporaryDirectory(prefix="convseg-calib-") as tmp:
        calibrator = create_calibrator(fp32_path, op_types, augmented_model_path=str(Path(tmp) / "augmented.onnx"),
                                       calibrate_method=_ort_method(method), extra_options={"moving_average": False})
        calibrator.infer_session = ort.InferenceSession(calibrator.augmented_model_path, sess_options=session_options(threads),
                                                        providers=["CPUExecutionProvider"])
        calibrator.collect_data(BatchReader(batches))
        ranges = calibrator.compute_data()
        del calibrator
    with atomic_path(cache) as tmp_cache:
        save_tensors_data(ranges, tmp_cache)


def quantize_int8(fp32_path: str | Path, out_path: str | Path, flavour: str, batches: Sequence[np.ndarray], *,
                  cache: str | Path, data_fingerprint: str, method: str = "minmax", exclude: Iterable[str] = (),
                  meta_updates: dict[str, Any] | None = None, threads: int | None = None) -> tuple[Path, bool]:
    """Quantise ``fp32_path`` into ``out_path``; returns (path, whether the range cache was reused)."""
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    if flavour not in FLAVOURS:
        raise ConvSegError(f"unknown INT8 flavour {flavour!r}: use int8 (TensorRT) or int8-cpu (ONNX Runtime on CPUs)")
    if method not in CALIB_METHODS:
        raise ConvSegError(f"unknown calibration method {method!r}: use one of {', '.join(CALIB_METHODS)}")
    fp32_path, cache = Path(fp32_path), Path(cache)
    model = onnx.load(str(fp32_path))
    meta = {**get_metadata(model, str(fp32_path)), **(meta_updates or {})}
    keep_float = float_nodes(model, exclude)
    key = _cache_key(fp32_path, data_fingerprint, method)
    _prepare_cache(cache, key)
    reused = cache.exists()
    if not reused:
        calibrate(fp32_path, batches, method, cache, threads)
    symmetric = flavour == "int8"
    with atomic_path(out_path) as tmp, _quiet_root_logger():
        quantize_static(
            str(fp32_path), str(tmp), BatchReader(batches),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QInt8 if symmetric else QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=keep_float,
            calibrate_method=_ort_method(method),
            calibration_cache_path=str(cache),  # written by calibrate() above
            extra_options={"ActivationSymmetric": symmetric, "WeightSymmetric": True},
        )
        quantized = onnx.load(str(tmp))
    if not reused:
        write_json(cache.with_name(cache.name + ".key"), key)
    set_metadata(quantized, {**meta, "float_nodes": keep_float, "calibration": {"method": method, "cache_reused": reused}})
    return save_checked(quantized, out_path), reused
