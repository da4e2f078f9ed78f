"""FP32 ONNX -> the ``int8`` (TensorRT) Q/DQ ONNX, placed by NVIDIA TensorRT Model Optimizer.

ModelOpt (``modelopt.onnx.quantization``) places Q/DQ the way TensorRT fuses them: symmetric INT8
activations and per-channel weights (stored as INT8, read through a DequantizeLinear), Q/DQ on
residual-Add inputs and around Concats so TensorRT can fuse or eliminate them, and biases left in
float (no INT32 ``DequantizeLinear``).

The activation ranges come from the project's own calibration (``exporters.int8.calibrated_ranges``,
the range cache shared with ``int8-cpu``), not from ModelOpt's: ModelOpt calibrates in an ONNX
Runtime session with every graph optimisation off, where the full-resolution 7x7/11x11 CFR
convolutions go through im2col (GBs and minutes for the resnet50 model at 256x256). ModelOpt is
given one frame to place Q/DQ with (its API needs data); then only the tensors it quantizes are
calibrated (56 of the 165 that ``int8-cpu`` needs, for the resnet50 model), and every activation
scale is set from those ranges: scale = max(|min|, |max|) / 127, which is what ModelOpt's own max
calibration computes.
"""

from __future__ import annotations

import contextlib
import logging
import re
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from convseg_deploy.artifacts.names import INPUT_NAME
from convseg_deploy.errors import ConvSegError
from convseg_deploy.exporters.quiet_logging import quiet_logger

INT8_MAX = 127.0
# The ModelOpt releases this module was tested with: it patches ModelOpt's internals (below), so
# setup.cfg's [export] extra carries exactly this range (tests/exporters/test_int8_modelopt_pin.py).
MODELOPT_MIN, MODELOPT_BELOW = (0, 47), (0, 48)
MODELOPT_RANGE = f">={MODELOPT_MIN[0]}.{MODELOPT_MIN[1]},<{MODELOPT_BELOW[0]}.{MODELOPT_BELOW[1]}"
MODELOPT_INSTALL = f'pip install "nvidia-modelopt{MODELOPT_RANGE}" (or "convseg-deploy[export]")'


def check_modelopt_version(version: str) -> None:
    """A one-line error for a ModelOpt outside MODELOPT_RANGE, whose internals may differ."""
    parts = tuple(int(p) for p in version.split(".")[:2] if p.isdigit())
    if len(parts) < 2 or not MODELOPT_MIN <= parts < MODELOPT_BELOW:
        raise ConvSegError(f"nvidia-modelopt {version} is installed; the int8 export was tested with {MODELOPT_RANGE}: "
                           + MODELOPT_INSTALL)


def import_modelopt() -> Any:
    try:
        from modelopt.onnx.quantization import quantize
    except ImportError as exc:
        raise ConvSegError(f"the int8 (TensorRT) export needs NVIDIA ModelOpt ({exc}): {MODELOPT_INSTALL}") from None
    from importlib.metadata import version

    check_modelopt_version(version("nvidia-modelopt"))
    return quantize


@contextlib.contextmanager
def _onnxruntime_restored() -> Iterator[None]:
    """Undo ModelOpt's monkeypatches of ONNX Runtime's quantization package on the way out.

    ModelOpt replaces functions and methods of ``onnxruntime.quantization`` (the calibrator
    factory, tensor selection, range merging, the quantizers' opset check) for good when it runs;
    left in place, they change what ``int8-cpu`` and our own calibration compute later in the
    same process (our calibrator then selects other tensors). It also edits the operator
    registries in place (drops ops TensorRT does not quantize), which decide what is calibrated."""
    import onnxruntime.quantization.base_quantizer as base_quantizer
    import onnxruntime.quantization.calibrate as calibrate
    import onnxruntime.quantization.qdq_quantizer as qdq_quantizer
    from onnxruntime.quantization import registry

    owners: list[Any] = [calibrate, base_quantizer.BaseQuantizer, qdq_quantizer.QDQQuantizer]
    owners += [v for v in vars(calibrate).values() if isinstance(v, type) and v.__module__ == calibrate.__name__]
    saved = [(owner, dict(vars(owner))) for owner in owners]
    tables = [registry.QLinearOpsRegistry, registry.QDQRegistry, registry.IntegerOpsRegistry]
    saved_tables = [dict(table) for table in tables]
    try:
        yield
    finally:
        for owner, attributes in saved:
            for name, value in attributes.items():
                if vars(owner).get(name) is not value:
                    setattr(owner, name, value)
        for table, contents in zip(tables, saved_tables):
            table.clear()
            table.update(contents)


def place_qdq(fp32_path: Path, out_path: Path, sample: np.ndarray, keep_float: Iterable[str]) -> None:
    """Run ModelOpt's INT8 placement on ``fp32_path`` (float compute stays FP32) into ``out_path``."""
    quantize = import_modelopt()
    excluded = [f"^{re.escape(name)}$" for name in keep_float]  # ModelOpt takes regular expressions
    # ModelOpt logs every step, and an NVML error on GPU-less machines
    with (quiet_logger("modelopt", logging.CRITICAL), _onnxruntime_restored(),
          tempfile.TemporaryDirectory(prefix="convseg-modelopt-") as tmp):
        # ModelOpt writes beside its input when it rewrites the opset; work on a copy.
        source = Path(tmp) / "model.onnx"
        source.write_bytes(fp32_path.read_bytes())
        # dq_only: weights stored as INT8 initializers read by a DequantizeLinear (no weight Q),
        # which TensorRT takes as it takes Q/DQ weights: the same logits, a file 4x smaller
        # (15.8 vs 62.5 MB for the resnet50 model), for bundles copied onto edge devices.
        quantize(str(source), quantize_mode="int8", calibration_data={INPUT_NAME: sample[:1]},
                 calibration_method="max", calibration_eps=["cpu"], high_precision_dtype="fp32", dq_only=True,
                 nodes_to_exclude=excluded or None, output_path=str(out_path), log_level="CRITICAL")


def quantized_activations(model: Any) -> set[str]:
    """The float tensors the placed model quantizes (QuantizeLinear inputs that are not weights)."""
    inits = {t.name for t in model.graph.initializer}
    return {n.input[0] for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] not in inits}


def apply_ranges(model: Any, ranges: dict[str, tuple[float, float]]) -> int:
    """Set every activation QuantizeLinear's scale from ``ranges``; returns how many were set.

    Inputs of one Concat share the largest of their scales, so TensorRT can eliminate the Concat
    (ModelOpt's "concat_elimination" grouping, kept with our ranges)."""
    from onnx import numpy_helper

    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    producers = {o: n for n in graph.node for o in n.output}
    scales: dict[str, float] = {}
    for node in graph.node:
        if node.op_type != "QuantizeLinear" or node.input[0] in inits:
            continue  # weights keep ModelOpt's per-channel scales
        tensor = node.input[0]
        if tensor not in ranges:
            raise ConvSegError(f"ModelOpt quantizes tensor {tensor!r}, which ONNX Runtime's calibration does not cover: "
                               f"keep the node that reads it in float (--exclude NODE)")
        low, high = ranges[tensor]
        scales[node.input[1]] = max(abs(float(low)), abs(float(high)), 1e-8) / INT8_MAX
    for node in graph.node:
        if node.op_type != "Concat":
            continue
        quantizers = [producers.get(producers[i].input[0]) if i in producers and producers[i].op_type == "DequantizeLinear"
                      else None for i in node.input]
        names = [q.input[1] for q in quantizers if q is not None and q.op_type == "QuantizeLinear" and q.input[1] in scales]
        if len(names) == len(node.input) > 1:
            shared = max(scales[n] for n in names)
            scales.update({n: shared for n in names})
    for name, scale in scales.items():
        inits[name].CopyFrom(numpy_helper.from_array(np.asarray(scale, dtype=np.float32), name))
    return len(scales)


def int32_dequantize_nodes(model: Any) -> list[str]:
    """Names of DequantizeLinear nodes reading an INT32 initializer (quantized biases)."""
    import onnx

    int32 = {t.name for t in model.graph.initializer if t.data_type == onnx.TensorProto.INT32}
    return [n.name for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in int32]


def place_tensorrt(fp32_path: Path, sample: np.ndarray, keep_float: Iterable[str]) -> Any:
    """ModelOpt's Q/DQ placement of ``fp32_path`` (an onnx.ModelProto; activation scales still
    ModelOpt's one-frame placeholders) with ``keep_float`` nodes in float."""
    import onnx

    with tempfile.TemporaryDirectory(prefix="convseg-int8-") as tmp:
        placed = Path(tmp) / "placed.onnx"
        place_qdq(fp32_path, placed, sample, keep_float)
        return onnx.load(str(placed))


def finish_tensorrt(model: Any, ranges: dict[str, tuple[float, float]]) -> Any:
    """The ``int8`` model: ``model`` (from ``place_tensorrt``) with its activation scales from
    ``ranges``, checked for what TensorRT rejects."""
    apply_ranges(model, ranges)
    bad = int32_dequantize_nodes(model)
    if bad:  # ModelOpt never quantizes biases; if a version ever did, TensorRT would reject the file
        raise ConvSegError(f"ModelOpt wrote DequantizeLinear of INT32 tensors ({', '.join(bad[:3])}), which TensorRT "
                           f"rejects: {MODELOPT_INSTALL}")
    return model
