"""The GPU graph, NVIDIA's operators as in HoloHub's ``colonoscopy_segmentation``::

    source -> FormatConverterOp -> InferenceOp -> SegmentationPostprocessorOp -> HolovizOp
       \\______________________________________________________________________/^
                                                        (the frame, under the mask)

and the postprocessor's labels also go to ``DeviceMaskWriterOp`` (masks in ``--out``). The
source is VideoStreamReplayerOp (``replayer:FOLDER``), V4L2VideoCaptureOp (``/dev/videoN``,
RGBA: one more FormatConverterOp to RGB first) or our ``FrameSourceOp`` (files, URLs) emitting
host tensors that FormatConverterOp copies to the device. Every operator is imported here only,
through ``sdk.operator``: their libraries need CUDA, TensorRT and a display. Not run on the
machine this was written on (no GPU); the parameter names are checked against the wheel.
"""

from __future__ import annotations

from typing import Any

from convseg_deploy.holoscan.config import FRAME_PORT
from convseg_deploy.holoscan.sdk import operator


# (from, its output port, to, its input port) by app.yaml section; "frames" and "writer" are ours.
# The source's port: FrameSourceOp's "frame", VideoStreamReplayerOp's "output", or after V4L2's RGBA
# went through "rgba_to_rgb", that FormatConverterOp's "tensor".
CAPTURE_FLOWS = [("v4l2", "signal", "rgba_to_rgb", "source_video")]
SOURCE_PORTS = {"frames": FRAME_PORT, "replayer": "output", "rgba_to_rgb": "tensor"}
GRAPH_FLOWS = [
    ("preprocessor", "tensor", "inference", "receivers"),
    ("inference", "transmitter", "postprocessor", "in_tensor"),
    ("postprocessor", "out_tensor", "holoviz", "receivers"),
    ("postprocessor", "out_tensor", "writer", "in"),
]
SOURCE_INPUTS = [("preprocessor", "source_video"), ("holoviz", "receivers")]  # the frame goes to both


def source_flows(source_section: str) -> list[tuple[str, str, str, str]]:
    """Every flow of the GPU graph for a source read by section ``source_section``."""
    flows = list(CAPTURE_FLOWS) if source_section == "rgba_to_rgb" else []
    flows += [(source_section, SOURCE_PORTS[source_section], to, port) for to, port in SOURCE_INPUTS]
    return flows + GRAPH_FLOWS


def compose_gpu(app: Any, config: dict[str, Any], frames: Any, args: Any, state: Any, frames_log: Any,
                source: Any, realtime: bool) -> None:
    """Add the GPU operators to ``app`` after ``frames`` (the source operator already made; None
    for a V4L2 device, whose V4L2VideoCaptureOp is made here)."""
    from holoscan.resources import BlockMemoryPool, CudaStreamPool, MemoryStorageType, UnboundedAllocator

    from convseg_deploy.holoscan.operators import DeviceMaskWriterOp

    height, width = config["convseg"]["model_size"]
    streams = CudaStreamPool(app, name="cuda_stream", dev_id=0, stream_flags=0, stream_priority=0,
                             reserved_size=1, max_size=5)
    # FormatConverterOp: the float32 frame at the model's size plus its resize scratch (x2, as HoloHub sizes it)
    pool = BlockMemoryPool(app, name="pool", storage_type=MemoryStorageType.DEVICE,
                           block_size=height * width * 3 * 4 * 2, num_blocks=4)

    def allocator(name: str) -> Any:
        return UnboundedAllocator(app, name=f"{name}_allocator")

    ops: dict[str, Any] = {}
    if frames is None:  # a V4L2 device
        section = "rgba_to_rgb"
        ops["v4l2"] = operator("V4L2VideoCaptureOp")(app, name="v4l2", allocator=allocator("v4l2"),
                                                     **{**config["v4l2"], "device": str(args.source)})
        ops[section] = operator("FormatConverterOp")(app, name=section, pool=allocator(section),
                                                     cuda_stream_pool=streams, **config[section])
    else:
        section = "frames" if source is not None else "replayer"
        ops[section] = frames
    ops["preprocessor"] = operator("FormatConverterOp")(app, name="preprocessor", pool=pool, cuda_stream_pool=streams,
                                                        **config["preprocessor"])
    ops["inference"] = operator("InferenceOp")(app, name="inference", allocator=allocator("inference"),
                                               cuda_stream_pool=streams, **config["inference"])
    ops["postprocessor"] = operator("SegmentationPostprocessorOp")(
        app, name="postprocessor", allocator=allocator("postprocessor"), cuda_stream_pool=streams,
        **config["postprocessor"])
    ops["holoviz"] = operator("HolovizOp")(app, name="holoviz", cuda_stream_pool=streams,
                                           **{**config["holoviz"], "headless": bool(args.headless or
                                                                                    config["holoviz"]["headless"])})
    # masks at the model's size: SegmentationPostprocessorOp's labels are, and no operator here knows the frame's
    ops["writer"] = DeviceMaskWriterOp(app, name="writer", out=args.out, frames_log=frames_log, state=state)
    if realtime:  # the newest frame: FormatConverterOp's input queue replaces its frame with a newer one
        from holoscan.core import IOSpec

        ops["preprocessor"].queue_policy("source_video", policy=IOSpec.QueuePolicy.POP)
    for start, out_port, end, in_port in source_flows(section):
        app.add_flow(ops[start], ops[end], {(out_port, in_port)})
