"""``deepstream``: a DeepStream (nvinfer) configuration and pipeline from a bundle, or a one-line refusal.

nvinfer with ``network-type=2`` thresholds its model's first output per pixel at
``segmentation-threshold`` and applies no sigmoid, and it normalises with one scale for all
channels. So DeepStream gets the bundle's ``deepstream.<p>.onnx`` variant (normalisation inside
the graph, probability first; ``artifacts.io_variants``) and nothing else: a logits-only model
would be thresholded as if its logits were probabilities. Before writing, the chosen file is
checked against the manifest (sha256) and opened: its input must be the NCHW float RGB nvinfer
hands over and its first output a Sigmoid's. INT8 (Q/DQ) runs from an engine built on the device
(``build-engine --bundle B --precision int8 --io deepstream``): without a calibration file,
DeepStream builds an INT8 request as FP16, so its config names only the engine and DeepStream
cannot quietly rebuild it another way. FP32/FP16 name the bundle's engine when there is one and
a copy of the ONNX file in the output folder, so an engine DeepStream builds itself is cached
there, never inside the bundle. Everything is written to a hidden folder renamed into place.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Callable

from convseg_deploy.artifacts.bundle_manifest import (
    check_variant_engine,
    framework_bundle,
    model_files,
    refuse_damaged,
    variant_entries,
)
from convseg_deploy.artifacts.io_variants import (
    DEEPSTREAM_NET_SCALE_FACTOR,
    DEEPSTREAM_OFFSETS,
    IO_DEEPSTREAM,
    PROBABILITY_OUTPUT,
    variant,
)
from convseg_deploy.deploy import deepstream_files as files
from convseg_deploy.errors import ConvSegError
from convseg_deploy.fsutil import atomic_dir

AUTO_ORDER = ("int8", "fp16", "fp32")  # int8 only where its engine is in the bundle


def _choose(bundle: Path, manifest: dict[str, Any], precision: str | None) -> tuple[dict[str, Any], dict[str, Any] | None]:
    onnx, engines = variant_entries(manifest, IO_DEEPSTREAM)
    if not onnx:
        plain = model_files(manifest)
        raise ConvSegError(f"{bundle} has no DeepStream variant (deepstream.<precision>.onnx; its models: {plain}): "
                           "those output logits, which nvinfer would threshold as probabilities; export with "
                           "--io tensor,deepstream and bundle again")
    build = f"convseg-deploy build-engine --bundle {bundle} --precision int8 --io {IO_DEEPSTREAM}"
    if precision == "int8-cpu":
        raise ConvSegError("int8-cpu is ONNX Runtime's CPU quantization, which TensorRT (and so DeepStream) does not run: "
                           "use --precision int8, fp16 or fp32")
    if precision is None:
        precision = next((p for p in AUTO_ORDER if p in onnx and (p != "int8" or p in engines)), None)
        if precision is None:
            raise ConvSegError(f"{bundle} has only an int8 DeepStream variant and no engine of it: build one on this "
                               f"device with '{build}'")
    if precision not in onnx:
        raise ConvSegError(f"{bundle} has no {precision} DeepStream variant (it has {', '.join(sorted(onnx))}): "
                           "pick one of those with --precision")
    if precision == "int8" and precision not in engines:
        raise ConvSegError(f"INT8 (Q/DQ) reaches DeepStream only as an engine built on the device (nvinfer builds an "
                           f"INT8 request without a calibration file as FP16): run '{build}', then this again")
    return onnx[precision], engines.get(precision)


def _check_model(path: Path, threshold: float) -> tuple[int, int]:
    """(height, width) of a DeepStream variant, after checking its I/O is what nvinfer needs."""
    from convseg_deploy.artifacts.io_variants import io_of
    from convseg_deploy.artifacts.onnx_meta import get_metadata, load_onnx

    model = load_onnx(path)
    meta = get_metadata(model, str(path))
    spec = variant(IO_DEEPSTREAM)
    inputs = [i for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
    dims = [d.dim_value for d in inputs[0].type.tensor_type.shape.dim] if len(inputs) == 1 else []
    if io_of(meta) != IO_DEEPSTREAM or inputs[0].name != spec.input or len(dims) != 4 or dims[1] != 3 \
            or inputs[0].type.tensor_type.elem_type != 1 or not all(dims[2:]):
        raise ConvSegError(f"{path} is not a DeepStream variant (float32 '{spec.input}' N x 3 x H x W in): re-export it")
    outputs = [o.name for o in model.graph.output]
    producer = {out: node.op_type for node in model.graph.node for out in node.output}
    if not outputs or outputs[0] != PROBABILITY_OUTPUT or producer.get(PROBABILITY_OUTPUT) != "Sigmoid":
        raise ConvSegError(f"{path}: its first output is {outputs[:1] or 'missing'}, not a Sigmoid's '{PROBABILITY_OUTPUT}': "
                           "nvinfer would threshold logits; re-export it")
    if not 0.0 < threshold < 1.0:
        raise ConvSegError(f"threshold {threshold} is not a probability between 0 and 1: nvinfer cannot use it")
    return dims[2], dims[3]


def write_deepstream(bundle: str | os.PathLike, out: str | os.PathLike, precision: str | None = None,
                     width: int = 1920, height: int = 1080, video: str = "video.mp4",
                     log: Callable[[str], None] = print) -> dict[str, Any]:
    """Write the DeepStream folder ``out`` for ``bundle``; return what it chose."""
    bundle, out = Path(bundle), Path(out)
    manifest = framework_bundle(bundle, "DeepStream needs a bundle ('convseg-deploy bundle') with a "
                                        "deepstream.<precision>.onnx variant")
    onnx, engine = _choose(bundle, manifest, precision)
    refuse_damaged(bundle, [onnx] + ([engine] if engine else []), "the configuration would name it")
    threshold = float(manifest["threshold"])
    model_h, model_w = _check_model(bundle / onnx["file"], threshold)
    if engine:
        check_variant_engine(bundle, engine, onnx, IO_DEEPSTREAM, "nvinfer here")
    if width < 16 or height < 16:
        raise ConvSegError(f"--width/--height {width}x{height}: nvstreammux needs a frame size of at least 16x16")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConvSegError(f"{out} exists and is not empty: choose a new --out")
    chosen = onnx["precision"]
    with atomic_dir(out) as tmp:
        os.chmod(tmp, 0o755)
        # nvinfer resolves paths against the config's folder, which is ``out`` once renamed
        engine_ref = os.path.relpath((bundle / engine["file"]).resolve(), out.resolve()) if engine else None
        onnx_ref = None
        if chosen != "int8":
            shutil.copyfile(bundle / onnx["file"], tmp / onnx["file"])
            onnx_ref = onnx["file"]
        settings = files.NvinferSettings(onnx_file=onnx_ref, engine_file=engine_ref, precision=chosen, height=model_h,
                                         width=model_w, threshold=threshold, net_scale_factor=DEEPSTREAM_NET_SCALE_FACTOR,
                                         offsets=DEEPSTREAM_OFFSETS, output=PROBABILITY_OUTPUT)
        (tmp / "nvinfer_config.txt").write_text(files.nvinfer_config(settings))
        script = tmp / "run_gst.sh"
        script.write_text(files.run_script(width, height))
        script.chmod(0o755)
        (tmp / "deepstream_app_config.txt").write_text(files.app_config(width, height, f"file://{video}"))
        (tmp / "probe.py").write_text(files.probe_script(width, height))
        (tmp / "README.md").write_text(files.readme(bundle, chosen, onnx["file"], engine["file"] if engine else None))
    log(f"wrote the DeepStream configuration for {onnx['file']}" + (f" and {engine['file']}" if engine else "")
        + f" to {out}")
    return {"precision": chosen, "onnx": onnx["file"], "engine": engine["file"] if engine else None,
            "size": (model_h, model_w)}
