"""The I/O variants of an exported model: the preprocessing in front of the graph, the output behind it.

``wrap_frames`` turns ``model.<p>.onnx`` (tensor I/O) into one of the variants of
``convseg_deploy.artifacts.io_variants``: ``frames`` (uint8 frames in, mask and probability out,
for any client), ``holoscan`` and ``deepstream`` (float32 RGB in 0-1 in the layout that
framework hands over; probability and logits out, because both frameworks threshold the raw
output without a sigmoid). The preprocessing recorded in the file's metadata (channel order,
scale, per-channel mean/std, layout) and the sigmoid become graph nodes, so the framework only
has to hand over what it hands over anyway. The original graph is kept unchanged in the middle,
so FP16 and Q/DQ INT8 files wrap the same way and TensorRT still sees the Q/DQ placement it fuses.
Every added node uses types TensorRT 10's ONNX parser takes (its Where has no UINT8, so the
mask is selected in float and cast), so every variant also builds into an engine.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from convseg_deploy.artifacts.io_variants import (
    IO_FRAMES,
    MASK_ON,
    MASK_OUTPUT,
    PROBABILITY_OUTPUT,
    WRAPPED_KINDS,
    io_of,
    variant,
)
from convseg_deploy.artifacts.names import INPUT_NAME, OUTPUT_NAME
from convseg_deploy.artifacts.onnx_meta import get_metadata, load_onnx, preprocess_from_metadata, set_metadata
from convseg_deploy.errors import ConvSegError
from convseg_deploy.exporters.onnx_export import save_checked

FRAMES_MIN_AGREEMENT_FP32 = 0.999  # wrapping adds exact arithmetic only; lower precisions keep their own minimum


def frames_name(precision: str, io: str = IO_FRAMES) -> str:
    """``frames.fp16.onnx``, ``deepstream.int8.onnx``: not ``model.*.onnx``, so runners of float
    tensors never pick one up."""
    return variant(io).file_name(precision)


def _const(name: str, values: Any, dtype: Any = np.float32) -> Any:
    from onnx import numpy_helper

    return numpy_helper.from_array(np.asarray(values, dtype=dtype), name)


def _front(spec: Any, io: str) -> tuple[list[Any], list[Any]]:
    """Nodes and constants from the variant's input to ``image``: the same float32 operations in
    the same order as imaging.preprocess (cast, channel order, scale, mean, std, NCHW), so the model
    inside sees the input predict gives it (bit-identical from uint8 frames; an INT8 model's input
    quantizer would round differently otherwise)."""
    from onnx import TensorProto, helper

    v = variant(io)
    channels = 3 if v.layout == "NHWC" else 1
    shape = (3,) if v.layout == "NHWC" else (1, 3, 1, 1)
    nodes, pixels = [], v.input
    if v.dtype == "uint8":
        nodes.append(helper.make_node("Cast", [pixels], ["io_f32"], to=TensorProto.FLOAT, name="io_cast"))
        pixels = "io_f32"
    consts = [_const("io_scale", spec.scale / v.pixel_scale), _const("io_mean", np.reshape(spec.mean, shape)),
              _const("io_std", np.reshape(spec.std, shape))]
    if spec.channel_order == "BGR":
        nodes.append(helper.make_node("Gather", [pixels, "io_bgr_index"], ["io_bgr"], axis=channels, name="io_rgb_to_bgr"))
        consts.append(_const("io_bgr_index", [2, 1, 0], np.int64))
        pixels = "io_bgr"
    normalised = "io_normalised" if v.layout == "NHWC" else INPUT_NAME
    nodes += [helper.make_node("Mul", [pixels, "io_scale"], ["io_scaled"], name="io_scale"),
              helper.make_node("Sub", ["io_scaled", "io_mean"], ["io_centred"], name="io_subtract_mean"),
              helper.make_node("Div", ["io_centred", "io_std"], [normalised], name="io_divide_std")]
    if v.layout == "NHWC":
        nodes.append(helper.make_node("Transpose", [normalised], [INPUT_NAME], perm=[0, 3, 1, 2], name="io_to_nchw"))
    return nodes, consts


def _tail(io: str, threshold: float) -> tuple[list[Any], list[Any]]:
    """Nodes and constants behind ``logits``: sigmoid, and for frames the mask."""
    from onnx import TensorProto, helper

    if io != IO_FRAMES:
        return [helper.make_node("Sigmoid", [OUTPUT_NAME], [PROBABILITY_OUTPUT], name="probability_sigmoid")], []
    nodes = [helper.make_node("Squeeze", [OUTPUT_NAME, "mask_channel_axis"], ["logits_hw"], name="logits_squeeze"),
             helper.make_node("Sigmoid", ["logits_hw"], [PROBABILITY_OUTPUT], name="probability_sigmoid"),
             helper.make_node("Greater", [PROBABILITY_OUTPUT, "mask_threshold"], ["mask_bool"], name="mask_threshold"),
             helper.make_node("Where", ["mask_bool", "mask_on", "mask_off"], ["mask_f32"], name="mask_values"),
             helper.make_node("Cast", ["mask_f32"], [MASK_OUTPUT], to=TensorProto.UINT8, name="mask_cast")]
    consts = [_const("mask_channel_axis", [1], np.int64), _const("mask_threshold", threshold),
              _const("mask_on", float(MASK_ON)), _const("mask_off", 0.0)]
    return nodes, consts


def wrap_frames(src: str | Path, dst: str | Path, *, io: str = IO_FRAMES, probability: bool = True) -> Path:
    """Write ``dst``: ``src`` (tensor I/O, with convseg_deploy metadata) as I/O variant ``io``.
    ``probability`` False leaves the frames variant's FP32 map out."""
    import onnx
    from onnx import helper

    if io not in WRAPPED_KINDS:
        raise ConvSegError(f"--io {io}: the variants made from model.<precision>.onnx are {', '.join(WRAPPED_KINDS)}")
    model = load_onnx(src)
    meta = get_metadata(model, str(src))
    if io_of(meta) != "tensor":
        raise ConvSegError(f"{src} already takes frames ({io_of(meta)} I/O): wrap the plain model.<precision>.onnx "
                           "it was made from")
    spec, threshold = preprocess_from_metadata(meta, str(src))
    graph = model.graph
    inputs = [i.name for i in graph.input if i.name not in {t.name for t in graph.initializer}]
    if inputs != [INPUT_NAME] or [o.name for o in graph.output] != [OUTPUT_NAME]:
        raise ConvSegError(f"{src} has inputs {inputs} and outputs {[o.name for o in graph.output]}, not "
                           f"'{INPUT_NAME}' -> '{OUTPUT_NAME}': wrap a file written by 'convseg-deploy export'")
    if not any(o.domain in ("", "ai.onnx") and o.version >= 13 for o in model.opset_import):
        raise ConvSegError(f"{src} uses an opset below 13 (Squeeze with an axes input needs 13): re-export it")
    dims = graph.input[0].type.tensor_type.shape.dim
    batch = dims[0].dim_param or dims[0].dim_value
    if any(not d.dim_value for d in dims[2:]):
        raise ConvSegError(f"{src} has a dynamic height/width: frames-in models need a fixed size; export without --dynamic-size")
    height, width = spec.size
    v = variant(io)
    front, front_consts = _front(spec, io)
    tail, tail_consts = _tail(io, threshold)
    graph.initializer.extend(front_consts + tail_consts)
    new_nodes = [*front, *graph.node, *tail]
    del graph.node[:]
    graph.node.extend(new_nodes)
    elem = onnx.TensorProto.UINT8 if v.dtype == "uint8" else onnx.TensorProto.FLOAT
    in_shape = [batch, height, width, 3] if v.layout == "NHWC" else [batch, 3, height, width]
    del graph.input[:]
    graph.input.append(helper.make_tensor_value_info(v.input, elem, in_shape))
    out_shapes = {MASK_OUTPUT: (onnx.TensorProto.UINT8, [batch, height, width]),
                  PROBABILITY_OUTPUT: (onnx.TensorProto.FLOAT, [batch, height, width] if io == IO_FRAMES
                                       else [batch, 1, height, width]),
                  OUTPUT_NAME: (onnx.TensorProto.FLOAT, [batch, 1, height, width])}
    names = [n for n in v.outputs if probability or io != IO_FRAMES or n != PROBABILITY_OUTPUT]
    del graph.output[:]
    graph.output.extend(helper.make_tensor_value_info(n, *out_shapes[n]) for n in names)
    described = {MASK_OUTPUT: f"uint8 0/{MASK_ON}", PROBABILITY_OUTPUT: "float32 sigmoid(logits)", OUTPUT_NAME: "float32"}
    layout = "NHWC" if v.layout == "NHWC" else "NCHW"
    range_text = "0-255" if v.pixel_scale == 1.0 else "0-1"
    set_metadata(model, {**meta, "io": io, "inputs": {v.input: f"{v.dtype} {layout} RGB {range_text}"},
                         "outputs": {n: described[n] for n in names}, "fed_by": v.fed_by})
    onnx.checker.check_model(model)  # cheap structural check before the full one in save_checked
    return save_checked(model, dst)


def wrap_and_check(src: Path, dst: Path, frames: np.ndarray, reference_masks: np.ndarray, minimum: float,
                   threads: int | None = None, io: str = IO_FRAMES) -> dict[str, Any]:
    """Wrap ``src`` into ``dst`` as variant ``io`` and measure the mask agreement of the wrapped
    model, fed as its framework feeds it, with ``reference_masks`` (the FP32 model's on
    ``frames``); the caller decides on ``passed``."""
    from convseg_deploy.metrics import mean_dice
    from convseg_deploy.ort_session import run_variant

    wrap_frames(src, dst, io=io)
    agreement = mean_dice(run_variant(dst, frames, threads), reference_masks)
    return {"agreement": agreement, "threshold": minimum, "passed": agreement >= minimum}


def check_wrapped(src: Path, dst: Path, count: int = 4, threads: int | None = None) -> float:
    """Wrap ``src`` into ``dst`` (frames I/O) and check the wrapped model's masks against ``src``'s
    own on ``count`` synthetic frames (agreement >= FRAMES_MIN_AGREEMENT_FP32 whatever the
    precision: both run the same weights); ``dst`` is removed on a miss."""
    from convseg_deploy.artifacts.onnx_meta import read_metadata
    from convseg_deploy.imaging import logits_to_masks
    from convseg_deploy.exporters.calibration import SYNTHETIC, load_frames
    from convseg_deploy.exporters.onnx_export import run_onnx

    spec, threshold = preprocess_from_metadata(read_metadata(src), str(src))
    frames = load_frames(SYNTHETIC, spec.size, calib_count=1, calib_batch=1, verify_count=count,
                         need_calibration=False).verify
    masks = logits_to_masks(run_onnx(src, frames, threads), threshold)
    check = wrap_and_check(src, dst, frames, masks, FRAMES_MIN_AGREEMENT_FP32, threads)
    if not check["passed"]:
        dst.unlink(missing_ok=True)
        raise ConvSegError(f"the frames-in/masks-out model made from {src} agrees {check['agreement']:.4f} with it on "
                           f"{count} frames (minimum {FRAMES_MIN_AGREEMENT_FP32}): report this as a bug")
    return float(check["agreement"])
