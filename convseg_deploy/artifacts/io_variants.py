"""The I/O variants of an exported model: what each file takes, what it gives, who feeds it.

One ConvSegNet graph, four ways in and out (``export --io``):

- ``tensor`` (``model.<p>.onnx``): ``image``, float32 N x 3 x H x W already preprocessed -> ``logits``
  N x 1 x H x W. What our runners, ``predict`` and ``bench`` run.
- ``frames`` (``frames.<p>.onnx``): ``frames``, uint8 N x H x W x 3 RGB -> ``mask`` uint8 N x H x W
  (0/255) and ``probability`` float32 N x H x W. For any client (Triton).
- ``holoscan`` (``holoscan.<p>.onnx``): ``rgb``, float32 N x H x W x 3 RGB in 0-1 -> ``probability``
  and ``logits``, float32 N x 1 x H x W. Holoscan's FormatConverterOp (``out_dtype: float32``,
  default ``scale_min`` 0 / ``scale_max`` 1) hands over interleaved HWC float in 0-1 and
  InferenceOp copies it into the model's input as it is; SegmentationPostprocessorOp
  (``network_output_type: sigmoid``, ``data_format: nchw``) thresholds the tensor it is given at
  0.5 without applying a sigmoid, so it must read ``probability``.
- ``deepstream`` (``deepstream.<p>.onnx``): ``rgb``, float32 N x 3 x H x W RGB in 0-1 -> ``probability``
  and ``logits``, float32 N x 1 x H x W. nvinfer hands over planar NCHW float computed as
  ``net-scale-factor * (x - offsets[c])`` from 0-255 pixels (1/255 and 0 here), and with
  ``network-type=2`` thresholds its first output layer per pixel without a sigmoid (so
  ``probability`` comes first) at ``segmentation-threshold``.

The model's own normalisation (channel order, scale, per-channel mean and std) is inside every
variant's graph: neither FormatConverterOp (only a rescale) nor nvinfer (one scale for all
channels) can express a per-channel std. ``feed`` does in numpy what each framework does to a
uint8 RGB frame, so the variants are checked here on exactly what they will be given.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from convseg_deploy.artifacts.names import INPUT_NAME, OUTPUT_NAME, artifact_name
from convseg_deploy.errors import ConvSegError

IO_TENSOR, IO_FRAMES, IO_HOLOSCAN, IO_DEEPSTREAM = "tensor", "frames", "holoscan", "deepstream"
FRAMES_INPUT, RGB_INPUT = "frames", "rgb"
MASK_OUTPUT, PROBABILITY_OUTPUT = "mask", "probability"
MASK_ON = 255  # mask pixel value of a polyp, as in the Kvasir-SEG mask files

# What nvinfer is told to do to the 0-255 pixels before they reach deepstream.<p>.onnx.
DEEPSTREAM_NET_SCALE_FACTOR = 1.0 / 255.0
DEEPSTREAM_OFFSETS = (0.0, 0.0, 0.0)
# FormatConverterOp's rescale range for holoscan.<p>.onnx (its defaults).
HOLOSCAN_SCALE_RANGE = (0.0, 1.0)


@dataclass(frozen=True)
class IoVariant:
    """The contract of one I/O variant.

    pixel_scale: the input holds uint8 pixel value x pixel_scale (1.0: the raw 0-255 values).
    outputs: output names in graph order (nvinfer reads the first one).
    """

    io: str
    input: str
    dtype: str  # uint8 | float32
    layout: str  # NCHW | NHWC
    pixel_scale: float
    outputs: tuple[str, ...]
    fed_by: str

    def file_name(self, precision: str) -> str:
        return artifact_name(precision) if self.io == IO_TENSOR else f"{self.io}.{precision}.onnx"


VARIANTS: dict[str, IoVariant] = {v.io: v for v in (
    IoVariant(IO_TENSOR, INPUT_NAME, "float32", "NCHW", 0.0, (OUTPUT_NAME,), "our runners (predict, bench)"),
    IoVariant(IO_FRAMES, FRAMES_INPUT, "uint8", "NHWC", 1.0, (MASK_OUTPUT, PROBABILITY_OUTPUT), "any client (Triton)"),
    IoVariant(IO_HOLOSCAN, RGB_INPUT, "float32", "NHWC", 1.0 / 255.0, (PROBABILITY_OUTPUT, OUTPUT_NAME),
              "Holoscan FormatConverterOp (float32, 0-1) -> InferenceOp"),
    IoVariant(IO_DEEPSTREAM, RGB_INPUT, "float32", "NCHW", DEEPSTREAM_NET_SCALE_FACTOR, (PROBABILITY_OUTPUT, OUTPUT_NAME),
              "DeepStream nvinfer (net-scale-factor 1/255, offsets 0)"),
)}
IO_KINDS = tuple(VARIANTS)
WRAPPED_KINDS = tuple(k for k in IO_KINDS if k != IO_TENSOR)  # made from model.<p>.onnx by the export


def variant(io: str) -> IoVariant:
    if io not in VARIANTS:
        raise ConvSegError(f"unknown I/O variant {io!r}: use one of {', '.join(IO_KINDS)}")
    return VARIANTS[io]


def io_of(meta: dict[str, Any]) -> str:
    """The I/O variant an ONNX file's metadata (or an engine's sidecar) declares; plain exports have none."""
    return str(meta.get("io", IO_TENSOR))


def spatial(shape: list[Any], io: str) -> tuple[Any, Any]:
    """(height, width) of an input shape laid out as variant ``io`` lays it out."""
    return (shape[1], shape[2]) if variant(io).layout == "NHWC" else (shape[2], shape[3])


def feed(io: str, rgb: np.ndarray) -> np.ndarray:
    """What the framework of variant ``io`` hands the model for uint8 RGB frames (N x H x W x 3,
    already at the model's size): the frames themselves, or FormatConverterOp's / nvinfer's
    float conversion in their layout."""
    v = variant(io)
    if io == IO_TENSOR:
        raise ConvSegError("the tensor variant takes preprocessed input: use imaging.preprocess")
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    if v.dtype == "uint8":
        return rgb
    if io == IO_HOLOSCAN:  # NPP's nppiScale_8u32f: scale_min + x * (scale_max - scale_min) / 255
        low, high = HOLOSCAN_SCALE_RANGE
        data = np.float32(low) + rgb.astype(np.float32) * np.float32((high - low) / 255.0)
    else:  # nvinfer: y = net-scale-factor * (x - offsets[c])
        data = np.float32(DEEPSTREAM_NET_SCALE_FACTOR) * (rgb.astype(np.float32) - np.asarray(DEEPSTREAM_OFFSETS, np.float32))
    data = data.astype(np.float32)
    return np.ascontiguousarray(data.transpose(0, 3, 1, 2) if v.layout == "NCHW" else data)


def masks_from_outputs(io: str, outputs: dict[str, np.ndarray], threshold: float) -> np.ndarray:
    """Bool N x H x W masks from a variant's outputs, as its consumer reads them: the frames
    variant's own mask, else its probability strictly above ``threshold`` (as nvinfer does)."""
    if io == IO_FRAMES:
        return np.asarray(outputs[MASK_OUTPUT]) == MASK_ON
    probability = np.asarray(outputs[PROBABILITY_OUTPUT], dtype=np.float32)
    return (probability[:, 0] if probability.ndim == 4 else probability) > threshold
