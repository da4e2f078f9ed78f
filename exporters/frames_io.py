"""Frames in, masks out: wrap an exported ONNX model so that it takes what a camera gives.

The wrapped model's input ``frames`` is UINT8 N x H x W x 3 RGB at the model's size; its
outputs are ``mask`` (UINT8 N x H x W, 0 or 255) and ``probability`` (FP32 N x H x W). The
preprocessing recorded in the file's metadata (channel order, scale, mean/std, NHWC -> NCHW)
and the sigmoid/threshold become graph nodes, so any client in any language (a Triton client,
a C++ capture loop) can use the model without this package. The original graph is kept
unchanged in the middle, so FP16 and Q/DQ INT8 files wrap the same way and TensorRT still
sees the Q/DQ placement it fuses.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from convseg_deploy.errors import ConvSegError
from convseg_deploy.artifacts.onnx_meta import get_metadata, load_onnx, preprocess_from_metadata, set_metadata
from convseg_deploy.artifacts.names import (  # noqa: F401 - the contract's names, re-exported for the exporters
    FRAMES_INPUT,
    INPUT_NAME,
    MASK_ON,
    MASK_OUTPUT,
    OUTPUT_NAME,
    PROBABILITY_OUTPUT,
)
from exporters.onnx_export import save_checked

IO_FRAMES = "frames"  # metadata "io" value of a wrapped model; plain exports have none (tensor I/O)


def is_frames_model(meta: dict[str, Any]) -> bool:
    return meta.get("io") == IO_FRAMES


FRAMES_MIN_AGREEMENT_FP32 = 0.999  # wrapping adds exact arithmetic only; lower precisions keep their own minimum


def frames_name(precision: str) -> str:
    """``frames.fp16.onnx``: not ``model.*.onnx``, so runners of float tensors never pick it up."""
    return f"{IO_FRAMES}.{precision}.onnx"


def _const(name: str, values: Any, dtype: Any = np.float32) -> Any:
    from onnx import numpy_helper

    return numpy_helper.from_array(np.asarray(values, dtype=dtype), name)


def wrap_frames(src: str | Path, dst: str | Path, *, probability: bool = True) -> Path:
    """Write ``dst``: ``src`` (tensor I/O, with convseg_deploy metadata) with the preprocessing
    in front and sigmoid/threshold behind. ``probability`` False leaves out the FP32 map."""
    import onnx
    from onnx import TensorProto, helper

    model = load_onnx(src)
    meta = get_metadata(model, str(src))
    if is_frames_model(meta):
        raise ConvSegError(f"{src} already takes frames: wrap the plain model.<precision>.onnx it was made from")
    spec, threshold = preprocess_from_metadata(meta, str(src))
    graph = model.graph
    inputs = [i.name for i in graph.input if i.name not in {t.name for t in graph.initializer}]
    if inputs != [INPUT_NAME] or [o.name for o in graph.output] != [OUTPUT_NAME]:
        raise ConvSegError(f"{src} has inputs {inputs} and outputs {[o.name for o in graph.output]}, not "
                           f"'{INPUT_NAME}' -> '{OUTPUT_NAME}': wrap a file written by 'convseg-deploy export'")
    dims = graph.input[0].type.tensor_type.shape.dim
    batch = dims[0].dim_param or dims[0].dim_value
    if any(not d.dim_value for d in dims[2:]):
        raise ConvSegError(f"{src} has a dynamic height/width: frames-in models need a fixed size; export without --dynamic-size")
    height, width = spec.size
    # The same float32 operations in the same order as imaging.preprocess, so the model inside
    # sees bit-identical input (an INT8 model's input quantizer would round differently otherwise).
    nodes = [helper.make_node("Cast", [FRAMES_INPUT], ["frames_f32"], to=TensorProto.FLOAT, name="frames_cast")]
    pixels = "frames_f32"
    if spec.channel_order == "BGR":
        nodes.append(helper.make_node("Gather", [pixels, "frames_bgr_index"], ["frames_bgr"], axis=3, name="frames_rgb_to_bgr"))
        pixels = "frames_bgr"
    nodes += [helper.make_node("Mul", [pixels, "frames_scale"], ["frames_scaled"], name="frames_scale"),
              helper.make_node("Sub", ["frames_scaled", "frames_mean"], ["frames_centred"], name="frames_subtract_mean"),
              helper.make_node("Div", ["frames_centred", "frames_std"], ["frames_normalised"], name="frames_divide_std"),
              helper.make_node("Transpose", ["frames_normalised"], [INPUT_NAME], perm=[0, 3, 1, 2], name="frames_to_nchw")]
    tail = [helper.make_node("Squeeze", [OUTPUT_NAME, "mask_channel_axis"], ["logits_hw"], name="logits_squeeze"),
            helper.make_node("Sigmoid", ["logits_hw"], [PROBABILITY_OUTPUT], name="probability_sigmoid"),
            helper.make_node("Greater", [PROBABILITY_OUTPUT, "mask_threshold"], ["mask_bool"], name="mask_threshold"),
            helper.make_node("Where", ["mask_bool", "mask_on", "mask_off"], [MASK_OUTPUT], name="mask_values")]
    consts = [_const("frames_scale", spec.scale), _const("frames_mean", spec.mean), _const("frames_std", spec.std),
              _const("mask_channel_axis", [1], np.int64),
              _const("mask_threshold", threshold), _const("mask_on", MASK_ON, np.uint8), _const("mask_off", 0, np.uint8)]
    if spec.channel_order == "BGR":
        consts.append(_const("frames_bgr_index", [2, 1, 0], np.int64))
    graph.initializer.extend(consts)
    new_nodes = [*nodes, *graph.node, *tail]
    del graph.node[:]
    graph.node.extend(new_nodes)
    del graph.input[:]
    graph.input.append(helper.make_tensor_value_info(FRAMES_INPUT, TensorProto.UINT8, [batch, height, width, 3]))
    outputs = [helper.make_tensor_value_info(MASK_OUTPUT, TensorProto.UINT8, [batch, height, width])]
    if probability:
        outputs.append(helper.make_tensor_value_info(PROBABILITY_OUTPUT, TensorProto.FLOAT, [batch, height, width]))
    del graph.output[:]
    graph.output.extend(outputs)
    if not any(o.domain in ("", "ai.onnx") and o.version >= 13 for o in model.opset_import):
        raise ConvSegError(f"{src} uses an opset below 13 (Squeeze with an axes input needs 13): re-export it")
    set_metadata(model, {**meta, "io": IO_FRAMES, "inputs": {FRAMES_INPUT: "uint8 NHWC RGB"},
                         "outputs": {MASK_OUTPUT: f"uint8 0/{MASK_ON}", **({PROBABILITY_OUTPUT: "float32"} if probability else {})}})
    onnx.checker.check_model(model)  # cheap structural check before the full one in save_checked
    return save_checked(model, dst)


def run_frames_model(path: str | Path, frames: np.ndarray, threads: int | None = None, batch: int = 8) -> np.ndarray:
    """Bool N x H x W masks of a frames-in model run with ONNX Runtime on the CPU."""
    from convseg_deploy.evaluate import iter_batches
    from convseg_deploy.ort_session import cpu_session

    session = cpu_session(path, threads)
    out = [session.run([MASK_OUTPUT], {FRAMES_INPUT: np.ascontiguousarray(frames[sl], dtype=np.uint8)})[0]
           for sl in iter_batches(len(frames), batch)]
    return np.concatenate(out) == MASK_ON


def wrap_and_check(src: Path, dst: Path, frames: np.ndarray, reference_masks: np.ndarray, minimum: float,
                   threads: int | None = None) -> dict[str, Any]:
    """Wrap ``src`` into ``dst`` and measure the mask agreement of the wrapped model with
    ``reference_masks`` (the FP32 model's on ``frames``); the caller decides on ``passed``."""
    from convseg_deploy.metrics import mean_dice

    wrap_frames(src, dst)
    agreement = mean_dice(run_frames_model(dst, frames, threads), reference_masks)
    return {"agreement": agreement, "threshold": minimum, "passed": agreement >= minimum}


def check_wrapped(src: Path, dst: Path, count: int = 4, threads: int | None = None) -> float:
    """Wrap ``src`` into ``dst`` and check the wrapped model's masks against ``src``'s own on
    ``count`` synthetic frames (agreement >= FRAMES_MIN_AGREEMENT_FP32 whatever the precision:
    both run the same weights); ``dst`` is removed on a miss."""
    from convseg_deploy.artifacts.onnx_meta import preprocess_from_metadata, read_metadata
    from convseg_deploy.imaging import logits_to_masks
    from exporters.calibration import SYNTHETIC, load_frames
    from exporters.onnx_export import run_onnx

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
