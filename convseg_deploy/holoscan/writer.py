"""``holoscan``: a Holoscan application folder (app.py, app.yaml, README.md) from a bundle.

The GPU path feeds InferenceOp the bundle's holoscan.<p>.onnx variant (or an engine built from it
on the device): FormatConverterOp hands over NHWC float RGB in 0-1 and cannot normalise per
channel, and SegmentationPostprocessorOp thresholds the tensor it is given at 0.5 without a
sigmoid, so the model must do its own normalisation and output a probability
(artifacts.io_variants). A bundle without that variant, or whose threshold is not the 0.5
SegmentationPostprocessorOp applies, is refused with a one-line error. The CPU path runs the
bundle's plain models on our runners, as ``predict --model BUNDLE`` does. Everything is written
into a hidden folder that is renamed into place.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import yaml

from convseg_deploy.artifacts.bundle_manifest import (
    check_variant_engine,
    framework_bundle,
    model_files,
    refuse_damaged,
    variant_entries,
)
from convseg_deploy.artifacts.io_variants import IO_HOLOSCAN, spatial
from convseg_deploy.errors import ConvSegError
from convseg_deploy.fsutil import atomic_dir
from convseg_deploy.holoscan.config import POSTPROCESSOR_THRESHOLD, app_config

ENGINE_ORDER = ("int8", "fp16", "fp32")  # an engine built on the device is preferred, the fastest first
ONNX_ORDER = ("fp16", "fp32")  # onnxrt on the GPU: FP16 first; INT8 Q/DQ runs best as a TensorRT engine
APP_FILES = ("app.py", "app.yaml", "README.md")

APP_PY = '''#!/usr/bin/env python3
"""Holoscan application for the bundle {bundle} (written by convseg-deploy holoscan).

python app.py --source SRC --out DIR [--realtime] [--max-frames N]; python app.py --help for more.
Its operators and their parameters are in app.yaml beside this file; README.md says how it runs.
"""

import sys
from pathlib import Path

from convseg_deploy.holoscan.application import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], Path(__file__).resolve().with_name("app.yaml")))
'''


def choose(bundle: Path, manifest: dict[str, Any], precision: str | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the holoscan ONNX entry, the entry InferenceOp loads: its engine or itself)."""
    onnx, engines = variant_entries(manifest, IO_HOLOSCAN)
    if not onnx:
        plain = model_files(manifest)
        raise ConvSegError(f"{bundle} has no Holoscan variant (holoscan.<precision>.onnx; its models: {plain}): add one "
                           "with 'convseg-deploy export --checkpoint CKPT --out DIR --io tensor,holoscan' and "
                           "'convseg-deploy bundle --artifacts DIR --out BUNDLE'")
    if precision is None:
        precision = next((p for p in ENGINE_ORDER if p in engines and p in onnx), None) \
            or next((p for p in ONNX_ORDER if p in onnx), None) or sorted(onnx)[0]
    if precision not in onnx:
        raise ConvSegError(f"{bundle} has no {precision} Holoscan variant (it has {', '.join(sorted(onnx))}): pick one "
                           "of those with --precision")
    return onnx[precision], engines.get(precision) or onnx[precision]


def model_size(path: Path) -> tuple[int, int]:
    """(height, width) of a holoscan variant, after checking it is one."""
    from convseg_deploy.artifacts.io_variants import io_of, variant
    from convseg_deploy.artifacts.onnx_meta import get_metadata, load_onnx

    model = load_onnx(path)
    spec = variant(IO_HOLOSCAN)
    inputs = [i for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
    dims = [d.dim_value for d in inputs[0].type.tensor_type.shape.dim] if len(inputs) == 1 else []
    outputs = [o.name for o in model.graph.output]
    if io_of(get_metadata(model, str(path))) != IO_HOLOSCAN or inputs[0].name != spec.input or len(dims) != 4 \
            or dims[3] != 3 or not all(dims[1:3]) or spec.outputs[0] not in outputs:
        raise ConvSegError(f"{path} is not a Holoscan variant (float32 '{spec.input}' N x H x W x 3 in, "
                           f"'{spec.outputs[0]}' out): re-export it with --io tensor,holoscan")
    height, width = spatial(dims, IO_HOLOSCAN)
    return int(height), int(width)


def readme(bundle: Path, chosen: dict[str, Any], loaded: dict[str, Any], backend: str) -> str:
    engine = loaded is not chosen
    rebuild = f"convseg-deploy build-engine --bundle BUNDLE --precision {chosen['precision']} --io {IO_HOLOSCAN}"
    engine_note = (f"A TensorRT engine runs only on the GPU and TensorRT version it was built with; rebuild it there "
                   f"with '{rebuild}'." if engine else
                   f"For TensorRT, build an engine on the device with '{rebuild}' and write the application again.")
    return f"""# Holoscan application for {bundle.name}

Written by `convseg-deploy holoscan` from `{bundle}`. Run it wherever the Holoscan SDK is installed
(`pip install "convseg-deploy[holoscan]"` on Linux x86_64 or aarch64, or NVIDIA's Holoscan container
with convseg-deploy installed in it):

    python app.py --source SRC --out DIR [--realtime] [--max-frames N]

SRC: a video file, a stream URL (rtsp://, udp://, ...), a V4L2 device /dev/videoN (capture cards
with V4L2 drivers), or `replayer:FOLDER` (a GXF recording read by VideoStreamReplayerOp; FOLDER/video
unless `--replayer-basename` says otherwise). Without `--realtime` a file is read as fast as the model
takes it and every frame is inferred; with it, a file plays at its own frame rate and the model takes
the newest frame (its input queue holds one frame and replaces it: `IOSpec.QueuePolicy.POP`).
Live sources (URLs, devices) always run newest-frame.

DIR gets `masks/NNNNNN.png` (0/255, NNNNNN the frame's index from 0; at the frame's size on the CPU
path, at the model's on the GPU path, where SegmentationPostprocessorOp makes them),
`frames.jsonl`, `summary.json` (the keys of `convseg-deploy live`, latency figures from Holoscan's
data-flow tracking) and `flow_tracking.log` (the Tracker's per-message timestamps).

## Paths
- GPU (`--path gpu`; `auto` picks it where an NVIDIA driver is present): source -> FormatConverterOp
  (float32 RGB 0-1 at the model's size) -> InferenceOp (backend `{backend}`,
  `{loaded['file']}`{' built on the device' if engine else ''}) -> SegmentationPostprocessorOp
  (`sigmoid`: the `probability` output above 0.5) -> HolovizOp, and the masks to DIR.
  {engine_note}
- CPU (`--path cpu`, or no GPU): Python operators that decode with convseg-deploy's sources and run the
  bundle's model on its runners (`--backend`, `--precision` as for `predict`), CPU data only.

The operators' parameters are in app.yaml, one section per operator, under the operators' own
parameter names. Not run here: the GPU path (no GPU, TensorRT or display on the machine that wrote it).
"""


def write_holoscan(bundle: str | os.PathLike, out: str | os.PathLike, precision: str | None = None,
                   log: Callable[[str], None] = print) -> dict[str, Any]:
    """Write the application folder ``out`` for ``bundle``; return what it chose."""
    bundle, out = Path(bundle), Path(out)
    manifest = framework_bundle(bundle, "the Holoscan application needs a bundle ('convseg-deploy bundle') with a "
                                        "holoscan.<precision>.onnx variant")
    chosen, loaded = choose(bundle, manifest, precision)
    refuse_damaged(bundle, list({id(e): e for e in (chosen, loaded)}.values()), "the application would load it")
    if loaded is not chosen:
        check_variant_engine(bundle, loaded, chosen, IO_HOLOSCAN, "InferenceOp here")
    threshold = float(manifest["threshold"])
    if threshold != POSTPROCESSOR_THRESHOLD:
        raise ConvSegError(f"{bundle}'s threshold is {threshold:g}; SegmentationPostprocessorOp thresholds the "
                           f"probability at {POSTPROCESSOR_THRESHOLD:g} only, so its masks would differ from predict's")
    size = model_size(bundle / chosen["file"])
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConvSegError(f"{out} exists and is not empty: choose a new --out")
    backend = "trt" if loaded is not chosen else "onnxrt"
    root = bundle.resolve()
    config = app_config(bundle=str(root), model_file=str(root / loaded["file"]), backend=backend, size=size,
                        precision=str(chosen["precision"]), threshold=threshold)
    with atomic_dir(out) as tmp:
        os.chmod(tmp, 0o755)
        script = tmp / "app.py"
        script.write_text(APP_PY.format(bundle=root))
        script.chmod(0o755)
        (tmp / "app.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        (tmp / "README.md").write_text(readme(root, chosen, loaded, backend))
    log(f"wrote the Holoscan application for {loaded['file']} ({backend}) to {out}")
    return {"precision": chosen["precision"], "model": loaded["file"], "backend": backend, "size": size}
