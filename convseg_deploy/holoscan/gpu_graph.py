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

from convseg_deploy.holoscan.sdk import operator


def compose_gpu(app: Any, config: dict[str, Any], frames: Any, args: Any, state: Any, frames_log: Any,
                source: Any) -> None:
    """Add the GPU operators to ``app`` after ``frames`` (the source operator already made)."""
    from holoscan.resources import BlockMemoryPool, CudaStreamPool, MemoryStorageType, UnboundedAllocator

    from convseg_deploy.holoscan.operators import FRAME_PORT, DeviceMaskWriterOp

    height, width = config["convseg"]["model_size"]
    streams = CudaStreamPool(app, name="cuda_stream", dev_id=0, stream_flags=0, stream_priority=0,
                             reserved_size=1, max_size=5)
    # FormatConverterOp: the float32 frame at the model's size plus its resize scratch (x2, as HoloHub sizes it)
    pool = BlockMemoryPool(app, name="pool", storage_type=MemoryStorageType.DEVICE,
                           block_size=height * width * 3 * 4 * 2, num_blocks=4)
    first, port = frames, FRAME_PORT
    if str(args.source).startswith("/dev/video"):
        capture = operator("V4L2VideoCaptureOp")(app, name="v4l2", allocator=UnboundedAllocator(app, name="v4l2_pool"),
                                                 **{**config["v4l2"], "device": str(args.source)})
        to_rgb = operator("FormatConverterOp")(app, name="rgba_to_rgb", pool=UnboundedAllocator(app, name="rgb_pool"),
                                               cuda_stream_pool=streams, **config["rgba_to_rgb"])
        app.add_flow(capture, to_rgb, {("signal", "source_video")})
        first, port = to_rgb, "tensor"
    elif source is None:  # VideoStreamReplayerOp
        port = "output"
    preprocessor = operator("FormatConverterOp")(app, name="preprocessor", pool=pool, cuda_stream_pool=streams,
                                                 **config["preprocessor"])
    inference = operator("InferenceOp")(app, name="inference", allocator=UnboundedAllocator(app, name="infer_pool"),
                                        cuda_stream_pool=streams, **config["inference"])
    postprocessor = operator("SegmentationPostprocessorOp")(
        app, name="postprocessor", allocator=UnboundedAllocator(app, name="post_pool"), cuda_stream_pool=streams,
        **config["postprocessor"])
    holoviz = operator("HolovizOp")(app, name="holoviz", cuda_stream_pool=streams,
                                    **{**config["holoviz"], "headless": bool(args.headless or config["holoviz"]["headless"])})
    frame_size = source_size(source)
    writer = DeviceMaskWriterOp(app, name="writer", out=args.out, frames_log=frames_log, state=state,
                                frame_size=frame_size)
    app.add_flow(first, preprocessor, {(port, "source_video")})
    app.add_flow(first, holoviz, {(port, "receivers")})
    app.add_flow(preprocessor, inference, {("tensor", "receivers")})
    app.add_flow(inference, postprocessor, {("transmitter", "in_tensor")})
    app.add_flow(postprocessor, holoviz, {("out_tensor", "receivers")})
    app.add_flow(postprocessor, writer, {("out_tensor", "in")})


def source_size(source: Any) -> tuple[int, int] | None:
    """The frames' (height, width) where our source knows it (masks are written at that size)."""
    return getattr(source, "frame_size", None)
