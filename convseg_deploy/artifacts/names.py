"""Names and thresholds shared by export, bundle, bench and predict."""

from __future__ import annotations

import re

PRECISIONS = ("fp32", "fp16", "int8", "int8-cpu")
# Mask agreement with FP32 (mean per-frame Dice of the binary masks, as bench measures it) that an
# export must reach by default.
DEFAULT_MIN_AGREEMENT = {"fp16": 0.99, "int8": 0.97, "int8-cpu": 0.97}
# Largest Dice loss against FP32 on masks with ground truth: bench's gate, and the export's check
# (there on the upper confidence bound of the per-frame drop, exporters.defaults.DROP_CONFIDENCE).
DEFAULT_MAX_DICE_DROP = 0.01

# predict's order for a bundle or an export folder under --backend auto, best first: (backend,
# provider, where it applies, precisions best first). The one place of this fact: deploy/select.py
# plans from it, the bundle's USAGE.txt and the docs print predict_order_lines(). Why each order:
# * TensorRT engines (checked at export, matching this device): the fastest first;
# * ONNX Runtime CUDA: FP16 is what GPUs run fastest; Q/DQ INT8 gains little on that provider;
# * OpenVINO: its VNNI/AMX kernels run int8-cpu fastest; never the TensorRT-flavour int8 file,
#   whose symmetric Q/DQ placement OpenVINO computes far from FP32 (docs/export.md);
# * ONNX Runtime CPU: int8-cpu is the model quantized for CPUs; its CPU provider emulates FP16,
#   so fp16 comes last.
PREDICT_ORDER = (
    ("tensorrt", "tensorrt", "TensorRT engines that match this GPU and TensorRT", ("int8", "fp16", "fp32")),
    ("onnxruntime", "cuda", "ONNX Runtime CUDA, when that provider loads", ("fp16", "fp32", "int8", "int8-cpu")),
    ("openvino", "cpu", "OpenVINO, on Intel CPUs where it is installed", ("int8-cpu", "fp32", "fp16")),
    ("onnxruntime", "cpu", "ONNX Runtime CPU", ("int8-cpu", "fp32", "int8", "fp16")),
)


def predict_order(backend: str, provider: str) -> tuple[str, ...]:
    """The precisions ``predict`` tries on ``backend``/``provider``, best first (OpenVINO's on any
    of its devices); a precision missing from it is never chosen there."""
    provider = "cpu" if backend == "openvino" else provider
    return next(order for b, p, _, order in PREDICT_ORDER if (b, p) == (backend, provider))


def predict_order_lines() -> list[str]:
    """``PREDICT_ORDER`` as text, one line per backend."""
    return [f"  {i}. {where}: {', '.join(order)}" for i, (_, _, where, order) in enumerate(PREDICT_ORDER, 1)]


INPUT_NAME = "image"  # N x 3 x H x W preprocessed float32
OUTPUT_NAME = "logits"  # N x 1 x H x W float32

EXPORT_FORMAT = "convseg-deploy/manifest/v1"  # manifest.json of an export folder
BUNDLE_FORMAT = "convseg-deploy/bundle/v1"  # manifest.json of a bundle
MODEL_SUFFIXES = {".onnx": "onnx", ".engine": "engine"}

OPENVINO_INSTALL_HINT = 'pip install "convseg-deploy[openvino]"'
TENSORRT_INSTALL_HINT = 'pip install "convseg-deploy[tensorrt]"'
REBUILD_HINT = "rebuild it here with 'convseg-deploy build-engine'"


def artifact_name(precision: str) -> str:
    """The file name of an exported ONNX model of ``precision`` (``model.int8-cpu.onnx``)."""
    return f"model.{precision}.onnx"


# Triton model names of a generated repository (``convseg-deploy triton``), read back by the
# Triton load benchmark: names must be folder names, and the precision stays readable in them.
TRITON_PLATFORMS = ("onnxruntime", "python", "tensorrt")
_PRECISION_IN_TRITON_MODEL = re.compile(rf"_(fp32|fp16|int8_cpu|int8)_({'|'.join(TRITON_PLATFORMS)})$")


def triton_model_name(prefix: str, precision: str, platform: str) -> str:
    """``convseg_int8_cpu_python``: the model of ``precision`` served by ``platform``."""
    return f"{prefix}_{precision.replace('-', '_')}_{platform}"


def precision_from_triton_model(name: str) -> str:
    """The precision a model of a generated repository was made from (``unknown`` for others)."""
    found = _PRECISION_IN_TRITON_MODEL.search(name)
    return found.group(1).replace("_", "-") if found else "unknown"
