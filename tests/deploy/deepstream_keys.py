"""DeepStream's documented configuration keys, kept here to check every key ``convseg-deploy deepstream`` writes.

Sources (read 2026-12-01 with the search tools; DeepStream itself cannot be installed here):

- nvinfer ``[property]`` group: NVIDIA's Gst-nvinfer documentation, "Gst-nvinfer Property Group
  Supported Properties" (https://docs.nvidia.com/metropolis/deepstream/dev-guide/text/DS_plugin_gst-nvinfer.html),
  and the parser that implements that table, ``sources/gst-plugins/gst-nvinfer/gstnvinfer_property_parser.h``
  (the key names, ``CONFIG_GROUP_INFER_*``) and ``gstnvinfer_property_parser.cpp`` (how each value
  is read with GLib's GKeyFile and which values it refuses) of the DeepStream 6.x sources, as
  published in the public mirror github.com/hiennguyen9874/deepstream-sources (copyright NVIDIA 2018-2021).
- deepstream-app groups: ``sources/apps/apps-common/src/deepstream_config_file_parser.c`` (source,
  streammux, gie, sink, osd, tiled-display keys), ``apps/deepstream-app/deepstream_app_config_parser.c``
  (``[application]``) and ``deepstream-yaml/deepstream_segvisual_yaml.cpp`` (``[segvisual]``) of the
  same sources; DeepStream's reference-application documentation lists the same keys.

Each nvinfer entry: (GKeyFile getter the parser uses, check of the value the parser accepts or
the documentation demands). Only keys are listed that a one-class segmentation config may use.
"""

from __future__ import annotations

from typing import Any, Callable

NVINFER_MAX_BATCH_SIZE = 1024  # NVDSINFER_MAX_BATCH_SIZE
MAX_CHANNELS = 4  # _MAX_CHANNELS, the longest offsets list


def _in(*values: int) -> Callable[[Any], bool]:
    return lambda v: v in values


NVINFER_KEYS: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "gpu-id": ("integer", lambda v: v >= 0),
    "onnx-file": ("string", lambda v: bool(v)),  # a path, resolved against the config file's folder
    "model-engine-file": ("string", lambda v: bool(v)),  # likewise
    "batch-size": ("integer", lambda v: 1 <= v <= NVINFER_MAX_BATCH_SIZE),
    "network-mode": ("integer", _in(0, 1, 2)),  # 0=FP32, 1=INT8, 2=FP16 (the parser refuses others)
    "network-type": ("integer", _in(0, 1, 2, 3, 100)),  # 2=Segmentation
    "process-mode": ("integer", _in(1, 2)),  # 1=primary (full frames)
    "gie-unique-id": ("integer", lambda v: v > 0),
    "interval": ("integer", lambda v: v >= 0),
    "num-detected-classes": ("integer", lambda v: v >= 0),
    "model-color-format": ("integer", _in(0, 1, 2)),  # 0=RGB, 1=BGR, 2=GRAY
    "network-input-order": ("integer", _in(0, 1)),  # 0=NCHW, 1=NHWC
    "net-scale-factor": ("double", lambda v: v > 0),
    "offsets": ("double_list", lambda v: 0 < len(v) <= MAX_CHANNELS),
    "infer-dims": ("integer_list", lambda v: len(v) == 3 and all(d > 0 for d in v)),  # c;h;w
    "maintain-aspect-ratio": ("boolean", lambda v: v in (True, False)),
    "scaling-filter": ("integer", _in(0, 1, 2, 3, 4, 5, 6)),  # NvBufSurfTransformInter_*: 1=Bilinear
    "output-blob-names": ("string_list", lambda v: len(v) >= 1 and all(v)),
    "segmentation-output-order": ("integer", _in(0, 1)),  # 0=NCHW
    "segmentation-threshold": ("double", lambda v: v >= 0),  # the parser refuses a negative one
    "output-tensor-meta": ("boolean", lambda v: v in (True, False)),
    "int8-calib-file": ("string", lambda v: bool(v)),
    "workspace-size": ("integer", lambda v: v >= 0),
}

# deepstream-app: group -> keys its parser reads (anything else it warns about as an unknown key).
APP_KEYS: dict[str, set[str]] = {
    "application": {"enable-perf-measurement", "perf-measurement-interval-sec", "gie-kitti-output-dir",
                    "global-gpu-id"},
    "source": {"enable", "type", "uri", "num-sources", "gpu-id", "latency", "camera-width", "camera-height",
               "camera-fps-n", "camera-fps-d", "camera-v4l2-dev-node", "drop-frame-interval", "nvbuf-memory-type"},
    "streammux": {"gpu-id", "live-source", "batch-size", "batched-push-timeout", "width", "height", "enable-padding",
                  "nvbuf-memory-type", "buffer-pool-size"},
    "primary-gie": {"enable", "gpu-id", "batch-size", "gie-unique-id", "config-file", "model-engine-file",
                    "interval", "labelfile-path", "plugin-type", "nvbuf-memory-type"},
    "segvisual": {"enable", "gpu-id", "batch-size", "width", "height", "nvbuf-memory-type"},
    "osd": {"enable", "gpu-id", "border-width", "text-size", "process-mode", "display-text", "display-bbox",
            "display-mask", "nvbuf-memory-type"},
    "tiled-display": {"enable", "rows", "columns", "width", "height", "gpu-id", "nvbuf-memory-type"},
    "sink": {"enable", "type", "sync", "qos", "width", "height", "source-id", "gpu-id", "nvbuf-memory-type",
             "container", "codec", "bitrate", "output-file"},
}


def app_group(name: str) -> str:
    """``source0`` -> ``source``, ``sink1`` -> ``sink``: deepstream-app numbers these groups."""
    base = name.rstrip("0123456789")
    return base if base in ("source", "sink") and base != name else name
