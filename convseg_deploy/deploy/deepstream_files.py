"""The text of what ``convseg-deploy deepstream`` writes: nvinfer's config, the pipeline, deepstream-app's config.

nvinfer reads a GLib key file (``[property]`` group, ``key=value``, lists separated by ``;``);
deepstream-app reads one too, with a group per component. Only keys of NVIDIA's Gst-nvinfer
and deepstream-app documentation are written (tests/deploy/deepstream_keys.py keeps that table).
The pipeline follows DeepStream's segmentation sample (deepstream_python_apps
apps/deepstream-segmentation): decoder -> nvstreammux -> nvvideoconvert -> nvinfer -> nvsegvisual -> sink.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

NETWORK_MODE = {"fp32": 0, "int8": 1, "fp16": 2}  # nvinfer's network-mode: 0=FP32, 1=INT8, 2=FP16
NVIDIA_ELEMENTS = ("nvv4l2decoder", "nvstreammux", "nvvideoconvert", "nvinfer", "nvsegvisual", "nveglglessink",
                   "nv3dsink")
SCALING_FILTER_BILINEAR = 1  # NvBufSurfTransformInter_Bilinear: predict resizes bilinearly (imaging.resize_image)
INFER_NAME = "segmentation"  # the nvinfer element's name in the pipeline, where the probe reads the masks


@dataclass(frozen=True)
class NvinferSettings:
    """What the nvinfer config says; paths are relative to the config file (nvinfer resolves them so)."""

    onnx_file: str | None  # None for INT8: DeepStream must not rebuild the engine itself (it would build FP16)
    engine_file: str | None
    precision: str
    height: int
    width: int
    threshold: float
    net_scale_factor: float
    offsets: tuple[float, float, float]
    output: str
    batch_size: int = 1


def _number(value: float) -> str:
    return repr(float(value))


def nvinfer_config(s: NvinferSettings) -> str:
    """nvinfer's ``[property]`` group for a one-class semantic segmentation model."""
    lines = [
        "# nvinfer configuration written by convseg-deploy deepstream (ConvSegNet polyp segmentation).",
        "# The model normalises inside its graph (per-channel mean/std, which nvinfer's one net-scale-factor",
        "# cannot express), so nvinfer only scales the 0-255 RGB pixels to 0-1. Its first output is the",
        "# probability, which nvinfer thresholds per pixel at segmentation-threshold without a sigmoid.",
        "[property]",
        "gpu-id=0",
        *([f"onnx-file={s.onnx_file}"] if s.onnx_file else []),
        *([f"model-engine-file={s.engine_file}"] if s.engine_file else []),
        f"batch-size={s.batch_size}",
        f"network-mode={NETWORK_MODE[s.precision]}",
        "network-type=2",
        "process-mode=1",
        "gie-unique-id=1",
        "interval=0",
        "num-detected-classes=1",
        "model-color-format=0",
        "network-input-order=0",
        f"net-scale-factor={_number(s.net_scale_factor)}",
        f"offsets={';'.join(_number(v) for v in s.offsets)}",
        f"infer-dims=3;{s.height};{s.width}",
        "maintain-aspect-ratio=0",
        f"scaling-filter={SCALING_FILTER_BILINEAR}",
        f"output-blob-names={s.output}",
        "segmentation-output-order=0",
        f"segmentation-threshold={_number(s.threshold)}",
        "",
    ]
    return "\n".join(lines)


def pipeline(video: str, config: str, width: int, height: int, sink: str) -> str:
    """The gst-launch-1.0 description: an H.264 MP4 file through nvinfer and nvsegvisual to ``sink``."""
    return (f"filesrc location={video} ! qtdemux ! h264parse ! nvv4l2decoder ! m.sink_0 "
            f"nvstreammux name=m batch-size=1 width={width} height={height} batched-push-timeout=40000 ! "
            f"nvvideoconvert ! nvinfer name={INFER_NAME} config-file-path={config} ! "
            f"nvsegvisual batch-size=1 width={width} height={height} ! {sink}")


def run_script(width: int, height: int) -> str:
    """run_gst.sh: the pipeline with gst-launch-1.0, on the video given as its argument."""
    line = pipeline('"$VIDEO"', '"$HERE/nvinfer_config.txt"', width, height, '"$SINK"')
    return "\n".join([
        "#!/bin/sh",
        "# The DeepStream segmentation pipeline, written by convseg-deploy deepstream.",
        "# usage: ./run_gst.sh VIDEO.mp4   (H.264 in MP4; SINK=fakesink for no display)",
        "set -e",
        'VIDEO="${1:?usage: ./run_gst.sh VIDEO.mp4 (H.264 in MP4)}"',
        'HERE="$(cd "$(dirname "$0")" && pwd)"',
        'if [ -e /etc/nv_tegra_release ]; then DEFAULT_SINK=nv3dsink; else DEFAULT_SINK=nveglglessink; fi',
        'SINK="${SINK:-$DEFAULT_SINK}"',
        f"exec gst-launch-1.0 -e {line}",
        "",
    ])


def app_config(width: int, height: int, video_uri: str) -> str:
    """deepstream-app's config: one file source, the same nvinfer config, nvsegvisual, an EGL window."""
    return "\n".join([
        "# deepstream-app -c deepstream_app_config.txt   (written by convseg-deploy deepstream)",
        "[application]",
        "enable-perf-measurement=1",
        "perf-measurement-interval-sec=5",
        "",
        "[source0]",
        "enable=1",
        "type=3",
        f"uri={video_uri}",
        "num-sources=1",
        "gpu-id=0",
        "",
        "[streammux]",
        "gpu-id=0",
        "live-source=0",
        "batch-size=1",
        "batched-push-timeout=40000",
        f"width={width}",
        f"height={height}",
        "",
        "[primary-gie]",
        "enable=1",
        "gpu-id=0",
        "batch-size=1",
        "gie-unique-id=1",
        "config-file=nvinfer_config.txt",
        "",
        "[segvisual]",
        "enable=1",
        "gpu-id=0",
        "batch-size=1",
        f"width={width}",
        f"height={height}",
        "",
        "[osd]",
        "enable=0",
        "",
        "[tiled-display]",
        "enable=0",
        "",
        "[sink0]",
        "enable=1",
        "type=2",
        "sync=1",
        "",
    ])


PROBE_PLACEHOLDER = "PIPELINE = None  # the pipeline description, filled in by convseg-deploy deepstream"


def probe_script(width: int, height: int) -> str:
    """probe.py: deepstream_probe.py with the same pipeline as run_gst.sh (video, config, sink left open)."""
    text = Path(__file__).with_name("deepstream_probe.py").read_text()
    if text.count(PROBE_PLACEHOLDER) != 1:
        raise RuntimeError("deepstream_probe.py lost its PIPELINE placeholder")
    return text.replace(PROBE_PLACEHOLDER, f"PIPELINE = {pipeline('{video}', '{config}', width, height, '{sink}')!r}")


def readme(bundle: Path, precision: str, onnx: str, engine: str | None) -> str:
    """README.md of the output folder: what is there, how to run it, what was checked."""
    model = (f"`{engine}` from the bundle (built on the device), no ONNX file: DeepStream cannot rebuild it as FP16"
             if precision == "int8" else
             f"`{onnx}` (copied here, so an engine DeepStream builds is cached here)"
             + (f" and the bundle's `{engine}`, which nvinfer loads when it matches this GPU" if engine else ""))
    return "\n".join([
        f"# DeepStream segmentation for `{bundle}` ({precision})",
        "",
        f"Model: {model}.",
        "",
        "- `nvinfer_config.txt`: nvinfer's `[property]` group: `network-type=2` (segmentation), the model's first",
        "  output `probability` in `output-blob-names`, `segmentation-threshold` = the model's threshold (a",
        "  probability), `net-scale-factor` 1/255 with `offsets` 0 (the model normalises per channel inside its",
        "  graph), `model-color-format=0` (RGB), `infer-dims`, `network-mode` of the file's precision.",
        "- `run_gst.sh VIDEO.mp4`: the gst-launch-1.0 pipeline (H.264 MP4 -> nvinfer -> nvsegvisual -> display;",
        "  `SINK=fakesink ./run_gst.sh VIDEO.mp4` without a display).",
        "- `deepstream_app_config.txt`: the same for `deepstream-app -c deepstream_app_config.txt` (reads",
        "  `video.mp4` beside it unless `--video` named another file).",
        "- `probe.py VIDEO.mp4 --out masks`: the pipeline in Python with a probe on nvinfer's output that",
        "  writes the masks of `NvDsInferSegmentationMeta` (pyds), one PNG per frame and `masks.jsonl`.",
        "",
        "Paths are relative to this folder (nvinfer resolves them against its config file): move it together",
        "with the bundle, or run `convseg-deploy deepstream` again.",
        "",
    ])
