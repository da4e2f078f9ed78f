"""app.yaml: the parameters of every operator the application can wire, and our own section.

Each operator section is passed to its operator as Holoscan applications do
(``self.kwargs("inference")``), so its keys are the operator's own parameter names (the tests
check them against the installed wheel). ``OPERATOR_SECTIONS`` says which operator reads which
section. The values follow HoloHub's ``colonoscopy_segmentation``, changed where our model
differs: the holoscan.<p>.onnx variant takes NHWC float RGB in 0-1 (FormatConverterOp's
``float32`` output at its default ``scale_min``/``scale_max``) at the model's own size, does the
normalisation itself, and its ``probability`` output is what SegmentationPostprocessorOp's
``sigmoid`` mode thresholds at 0.5.
"""

from __future__ import annotations

from typing import Any

from convseg_deploy.artifacts.io_variants import HOLOSCAN_SCALE_RANGE, IO_HOLOSCAN, PROBABILITY_OUTPUT, variant

OURS = "convseg"  # the section application.py reads (bundle, CPU-path model, sizes)
MODEL_KEY = "convseg"  # the model's name in InferenceOp's maps
PREPROCESSED = "rgb"  # FormatConverterOp's output tensor, InferenceOp's input
OPERATOR_SECTIONS = {
    "replayer": "VideoStreamReplayerOp",
    "v4l2": "V4L2VideoCaptureOp",
    "rgba_to_rgb": "FormatConverterOp",
    "preprocessor": "FormatConverterOp",
    "inference": "InferenceOp",
    "postprocessor": "SegmentationPostprocessorOp",
    "holoviz": "HolovizOp",
}
FRAME_PORT, MASK_PORT = "frame", "masked"  # our Python operators' ports (operators.py)
REPLAYED_PORT = "replayed"  # ReplayedFramesOp's input, from VideoStreamReplayerOp's "output"
MASKS_FOLDER = "masks"
POSTPROCESSOR_THRESHOLD = 0.5  # SegmentationPostprocessorOp's sigmoid mode: label 1 where the value > 0.5
MASK_COLOR = [0.1451, 0.9412, 0.6157, 0.4]  # HoloHub colonoscopy_segmentation's polyp colour, 40% over the frame


def app_config(*, bundle: str, model_file: str, backend: str, size: tuple[int, int], precision: str,
               threshold: float) -> dict[str, Any]:
    """The yaml of an application for ``bundle``: ``model_file`` (holoscan.<p>.onnx or its
    engine) on InferenceOp's ``backend`` (trt or onnxrt), model input ``size`` (H, W)."""
    height, width = size
    outputs = list(variant(IO_HOLOSCAN).outputs)
    low, high = HOLOSCAN_SCALE_RANGE
    return {
        OURS: {"bundle": bundle, "precision": precision, "threshold": threshold, "model_size": [height, width],
               "holoscan_model": model_file, "inference_backend": backend},
        "replayer": {"basename": "video", "frame_rate": 0.0, "repeat": False, "realtime": False, "count": 0},
        "v4l2": {"device": "/dev/video0", "pixel_format": "auto"},
        # V4L2VideoCaptureOp hands out RGBA: drop alpha first, then the same conversion as the others
        "rgba_to_rgb": {"in_dtype": "rgba8888", "out_dtype": "rgb888"},
        "preprocessor": {"in_dtype": "rgb888", "out_dtype": "float32", "out_tensor_name": PREPROCESSED,
                         "scale_min": low, "scale_max": high, "resize_width": width, "resize_height": height},
        "inference": {"backend": backend, "model_path_map": {MODEL_KEY: model_file},
                      "pre_processor_map": {MODEL_KEY: [PREPROCESSED]}, "inference_map": {MODEL_KEY: outputs},
                      "is_engine_path": backend == "trt", "input_on_cuda": True, "output_on_cuda": True,
                      "transmit_on_cuda": True},
        "postprocessor": {"in_tensor_name": PROBABILITY_OUTPUT, "network_output_type": "sigmoid",
                          "data_format": "nchw"},
        "holoviz": {"tensors": [{"name": "", "type": "color", "opacity": 1.0, "priority": 0},
                                {"name": "out_tensor", "type": "color_lut", "opacity": 1.0, "priority": 1}],
                    "color_lut": [[0.0, 0.0, 0.0, 0.0], MASK_COLOR], "window_title": "convseg-deploy",
                    "headless": False},
    }


def mask_name(index: int) -> str:
    """The PNG of frame ``index`` under masks/ (0-based, in arrival order)."""
    return f"{index:06d}.png"
