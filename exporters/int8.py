"""FP32 ONNX -> INT8 Q/DQ ONNX, in two flavours.

* ``int8`` (for TensorRT): NVIDIA ModelOpt's Q/DQ placement (``exporters.int8_modelopt``):
  activations INT8 symmetric (zero point 0), weights INT8 symmetric per channel, biases float,
  Q/DQ where TensorRT fuses (residual Adds, Concats): what TensorRT's explicit quantization takes.
* ``int8-cpu`` (for ONNX Runtime on CPUs): ONNX Runtime's static quantization, activations UINT8
  asymmetric, weights INT8 per channel: the VNNI fast path (symmetric INT8 activations run slower
  than FP32 there).

Calibration runs once: the tensor ranges go to a cache file that serves both flavours and later
exports, keyed by the FP32 model and the calibration data so a stale cache is never reused.
"""

from __future__ import annotations

import contextlib
import fnmatch
import functools
import io
import json
import logging
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from convseg_deploy.artifacts.names import INPUT_NAME, OUTPUT_NAME
from convseg_deploy.errors import ConvSegError
from convseg_deploy.fsutil import atomic_path, sha256_file, write_json
from convseg_deploy.artifacts.onnx_meta import get_metadata, set_metadata
from convseg_deploy.exporters.defaults import CALIB_METHODS, DEFAULT_CALIB_METHOD, calib_method_for, range_cache_for
from convseg_deploy.exporters.onnx_export import save_checked
from convseg_deploy.exporters.quiet_logging import quiet_logger

FLAVOURS = ("int8", "int8-cpu")
# The flavour TensorRT runs: placed by ModelOpt, and checked with ONNX Runtime's reference Q/DQ
# (``ort_session.session_options``), since the CPU's INT8 kernels do not fit its placement.
TENSORRT_FLAVOUR = "int8"


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


# Ops that map each element on its own (or with a broadcast constant): walking back from the
# logits through them finds the head, e.g. the reference checkpoint's output ReLU after its conv.
ELEMENTWISE_OPS = frozenset({"Relu", "LeakyRelu", "Sigmoid", "Tanh", "Clip", "Identity", "Cast", "Add", "Sub", "Mul",
                             "Div", "Neg", "Abs", "Exp", "HardSigmoid", "BatchNormalization"})


def head_nodes(model: Any) -> list[str]:
    """The node that writes the logits and, through element-wise ops, the layers behind it up to
    and including the first non-element-wise one (the head convolution)."""
    producers = {o: n for n in model.graph.node for o in n.output}
    inits = {t.name for t in model.graph.initializer}
    found: list[str] = []
    pending = [OUTPUT_NAME]
    while pending:
        node = producers.get(pending.pop())
        if node is None or node.name in found:
            continue
        found.append(node.name)
        if node.op_type in ELEMENTWISE_OPS:
            pending += [i for i in node.input if i and i not in inits]
    return found


def float_nodes(model: Any, patterns: Iterable[str] = ()) -> list[str]:
    """Nodes kept in float: those reading the image (the first convolutions), the head (see
    ``head_nodes``: quantising logits hurts masks most), and any node whose name matches one of
    ``patterns`` (fnmatch)."""
    patterns = list(patterns)
    head = set(head_nodes(model))
    return [node.name for node in model.graph.node
            if INPUT_NAME in node.input or node.name in head or any(fnmatch.fnmatch(node.name, p) for p in patterns)]


def _cache_key(fp32_path: Path, fingerprint: str, method: str) -> dict[str, str]:
    return {"model_sha256": sha256_file(fp32_path), "data": fingerprint, "method": method}


def _key_file(cache: Path) -> Path:
    return cache.with_name(cache.name + ".key")


def _prepare_cache(cache: Path, key: dict[str, str]) -> bool:
    """Remove a range cache that was computed for another model, data set or method; returns
    whether the cache left holds every tensor ONNX Runtime's quantizers calibrate ("complete")."""
    key_file = _key_file(cache)
    stored = json.loads(key_file.read_text()) if cache.exists() and key_file.exists() else None
    if cache.exists() and (stored is None or {k: stored.get(k) for k in key} != key):
        cache.unlink()
        stored = None
    if not cache.exists():
        key_file.unlink(missing_ok=True)
    return bool(stored and stored.get("complete", True))  # caches written before subsets were complete


def _ort_method(name: str) -> Any:
    """ONNX Runtime's CalibrationMethod for one of CALIB_METHODS."""
    from onnxruntime.quantization import CalibrationMethod

    return {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
            "percentile": CalibrationMethod.Percentile}[name]


@contextlib.contextmanager
def _calibrating_only(tensors: set[str] | None) -> Iterator[None]:
    """Make ONNX Runtime's calibrators calibrate only ``tensors`` (None: all) for the block.

    They calibrate every float tensor of the quantizable op types and have no option to narrow
    that; the ``int8`` (TensorRT) placement quantizes about a third of those tensors, and every
    calibrated tensor costs a graph output (and for entropy/percentile a histogram) per frame.
    The ranges of the tensors kept are the same: each tensor's range depends only on its values."""
    from onnxruntime.quantization.calibrate import CalibraterBase

    if tensors is None:
        yield
        return
    original = vars(CalibraterBase)["select_tensors_to_calibrate"]

    def select(self: Any, model: Any) -> tuple[set[str], dict[str, Any]]:
        found, value_infos = original(self, model)
        return found & tensors, value_infos

    CalibraterBase.select_tensors_to_calibrate = select
    try:
        yield
    finally:
        CalibraterBase.select_tensors_to_calibrate = original


def calibrate(fp32_path: Path, batches: Sequence[np.ndarray], method: str, threads: int | None,
              tensors: set[str] | None = None) -> dict[str, Any]:
    """Ranges (ONNX Runtime's TensorData by tensor name) of ``tensors`` of ``fp32_path`` over
    ``batches``; None: every tensor that ``quantize_static`` calibrates.

    ``quantize_static`` would calibrate by itself, but it runs the calibration model with every
    graph optimisation off (ORT_DISABLE_ALL): convolutions then go through im2col, which for the
    full-resolution 11x11 CFR branch at 256x256 needs GBs (over 10 GB resident for the resnet50
    model on 200 frames here, and about 8 minutes, against about 2 GB and 6.5 minutes here).
    Optimisations never change the values of graph outputs, and the ranges are graph outputs
    (ReduceMin/ReduceMax of every calibrated tensor), so the same calibration model runs here in an
    optimised session; ``quantize_static`` then reads the ranges from the cache.
    """
    import tempfile

    from onnxruntime.quantization.calibrate import create_calibrator
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    from convseg_deploy.ort_session import cpu_session

    op_types = sorted(set(QLinearOpsRegistry) | set(QDQRegistry))  # what quantize_static calibrates
    with tempfile.TemporaryDirectory(prefix="convseg-calib-") as tmp:
        with _calibrating_only(tensors):
            calibrator = create_calibrator(fp32_path, op_types, augmented_model_path=str(Path(tmp) / "augmented.onnx"),
                                           calibrate_method=_ort_method(method), extra_options={"moving_average": False})
        calibrator.infer_session = cpu_session(calibrator.augmented_model_path, threads)
        # the histogram calibrators print their progress (five lines) into the export's log
        with contextlib.redirect_stdout(io.StringIO()):
            calibrator.collect_data(BatchReader(batches))
            ranges = dict(calibrator.compute_data().data)
        del calibrator  # its sessions hold the augmented model open
    return ranges


def calibrated_ranges(fp32_path: Path, batches: Sequence[np.ndarray], *, cache: Path, data_fingerprint: str,
                      method: str, threads: int | None, tensors: set[str] | None = None,
                      ) -> tuple[dict[str, tuple[float, float]], bool]:
    """Ranges of ``tensors`` of ``fp32_path`` (None: every tensor ``quantize_static`` needs) and
    whether ``cache`` already held them all. The cache is kept for this model, data and method
    only; tensors it lacks are calibrated and added to it, so the ``int8`` file calibrates only
    what its placement quantizes and a later ``int8-cpu`` tops the cache up."""
    from onnxruntime.quantization.calibrate import TensorsData, load_tensors_data, save_tensors_data

    if method not in CALIB_METHODS:
        raise ConvSegError(f"unknown calibration method {method!r}: use one of {', '.join(CALIB_METHODS)}")
    key = _cache_key(fp32_path, data_fingerprint, method)
    complete = _prepare_cache(cache, key)
    cached = dict(load_tensors_data(cache).data) if cache.exists() else {}
    missing = None if tensors is None else set(tensors) - set(cached)
    reused = complete if tensors is None else cache.exists() and not missing
    if not reused:
        cached.update(calibrate(fp32_path, batches, method, threads, missing))
        with atomic_path(cache) as tmp_cache:
            save_tensors_data(TensorsData(_ort_method(method), cached), tmp_cache)
        write_json(_key_file(cache), {**key, "complete": complete or tensors is None})
    return {name: tuple(float(v) for v in np.asarray(t.range_value).ravel()[:2]) for name, t in cached.items()}, reused


def _quantize_cpu(fp32_path: Path, out: Path, batches: Sequence[np.ndarray], cache: Path, method: str,
                  keep_float: list[str]) -> Any:
    """The ``int8-cpu`` model: ONNX Runtime's QDQ with UINT8 activations, ranges from ``cache``."""
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    # ONNX Runtime's quantizer logs its advice through the root logger
    with atomic_path(out) as tmp, quiet_logger(None, logging.ERROR):
        quantize_static(
            str(fp32_path), str(tmp), BatchReader(batches),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=keep_float,
            calibrate_method=_ort_method(method),
            calibration_cache_path=str(cache),  # complete: written by calibrated_ranges()
            extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
        )
        return onnx.load(str(tmp))


def quantize_int8(fp32_path: str | Path, out_path: str | Path, flavour: str, batches: Sequence[np.ndarray], *,
                  cache: str | Path, data_fingerprint: str, method: str = DEFAULT_CALIB_METHOD, exclude: Iterable[str] = (),
                  meta_updates: dict[str, Any] | None = None, threads: int | None = None,
                  calibrate_all: bool = False) -> tuple[Path, bool]:
    """Quantise ``fp32_path`` into ``out_path``; returns (path, whether the range cache was reused).
    The ranges are kept in ``cache`` with the flavour's range method in its name (``range_cache_for``).

    The ``int8`` flavour calibrates only the tensors its placement quantizes, unless
    ``calibrate_all`` (an ``int8-cpu`` of the same export follows and needs them all: one pass
    over the calibration frames serves both)."""
    import onnx

    from convseg_deploy.exporters.int8_modelopt import finish_tensorrt, place_tensorrt, quantized_activations

    if flavour not in FLAVOURS:
        raise ConvSegError(f"unknown INT8 flavour {flavour!r}: use int8 (TensorRT) or int8-cpu (ONNX Runtime on CPUs)")
    fp32_path, cache = Path(fp32_path), Path(cache)
    method = calib_method_for(flavour, method)
    cache = range_cache_for(cache, method)
    model = onnx.load(str(fp32_path))
    meta = {**get_metadata(model, str(fp32_path)), **(meta_updates or {})}
    keep_float = float_nodes(model, exclude)
    calibrate_ranges = functools.partial(calibrated_ranges, fp32_path, batches, cache=cache, data_fingerprint=data_fingerprint,
                                         method=method, threads=threads)
    if flavour == TENSORRT_FLAVOUR:
        placed = place_tensorrt(fp32_path, batches[0], keep_float)
        ranges, reused = calibrate_ranges(tensors=None if calibrate_all else quantized_activations(placed))
        quantized = finish_tensorrt(placed, ranges)
    else:
        _, reused = calibrate_ranges()
        quantized = _quantize_cpu(fp32_path, Path(out_path), batches, cache, method, keep_float)
    set_metadata(quantized, {**meta, "float_nodes": keep_float, "calibration": {"method": method, "cache_reused": reused}})
    return save_checked(quantized, out_path), reused
