"""Click commands of the export stage: ``export`` (ONNX FP32/FP16/INT8) and ``build-engine``."""

from __future__ import annotations

from pathlib import Path

import click

from convseg_deploy.cli_values import csv_list
from convseg_deploy.artifacts.io_variants import IO_KINDS, IO_TENSOR
from convseg_deploy.artifacts.names import DEFAULT_MAX_DICE_DROP, DEFAULT_MIN_AGREEMENT, PRECISIONS
from convseg_deploy.errors import ConvSegError
from convseg_deploy.exporters.defaults import (AUTO_CALIB_METHOD, AUTO_DICE_DROP, CALIB_METHOD_BY_FLAVOUR, CALIB_METHODS,
                                               DEFAULT_CALIB_COUNT, DEFAULT_CALIB_METHOD,
                                               DEFAULT_VERIFY_COUNT, DROP_CONFIDENCE)
from convseg_deploy.exporters.onnx_export import DEFAULT_OPSET, MAX_OPSET, MIN_OPSET


def _size(value: tuple[int, int] | None) -> tuple[int, int] | None:
    return tuple(value) if value else None  # type: ignore[return-value]


@click.command(short_help="Export verified ONNX; default INT8 needs --calib-data.")
@click.option("--checkpoint", required=True, type=click.Path(path_type=Path), help="Checkpoint (.pt) to export.")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Folder for the ONNX files and manifest.json.")
@click.option("--precision", "precisions", default=",".join(PRECISIONS), show_default=True,
              help="Comma list of fp32, fp16, int8 (TensorRT), int8-cpu (ONNX Runtime on CPUs).")
@click.option("--calib-data", help="Folder of real frames (images/, and masks/ for the Dice-drop check) for INT8 "
              "calibration and the checks; REQUIRED for int8 and int8-cpu, so for the default --precision "
              "('synth' for synthetic frames, trials only).")
@click.option("--calib-count", default=DEFAULT_CALIB_COUNT, show_default=True, type=click.IntRange(min=1),
              help="Calibration frames, evenly spread over --calib-data.")
@click.option("--calib-batch", default=1, show_default=True, type=click.IntRange(min=1),
              help="Frames per calibration run (1 is fastest on CPUs: the range reductions stay in cache).")
@click.option("--calib-method", default=DEFAULT_CALIB_METHOD, show_default=True,
              type=click.Choice([AUTO_CALIB_METHOD, *CALIB_METHODS]),
              help="How INT8 ranges are set from the calibration frames; auto: "
                   + ", ".join(f"{m} for {f}" for f, m in CALIB_METHOD_BY_FLAVOUR.items()) + ".")
@click.option("--calib-cache", type=click.Path(dir_okay=False, path_type=Path),
              help="Range cache file; each range method keeps its own, the method before the suffix "
                   "[OUT/calibration-cache.json: calibration-cache.percentile.json, ...].")
@click.option("--exclude", help="Comma list of node-name patterns kept in float (the first convolutions and the head always are).")
@click.option("--image-size", nargs=2, type=int, help="H W of the exported input [the checkpoint's].")
@click.option("--opset", default=DEFAULT_OPSET, show_default=True, type=int, help=f"ONNX opset ({MIN_OPSET}-{MAX_OPSET}).")
@click.option("--static-batch", is_flag=True, help="Fix the batch at 1 instead of a dynamic batch.")
@click.option("--dynamic-size", is_flag=True, help="Make H and W dynamic too (multiples of 16).")
@click.option("--min-agreement", type=float, help="Override the mask-agreement minimum ("
              + ", ".join(f"{k} {v}" for k, v in DEFAULT_MIN_AGREEMENT.items()) + ").")
@click.option("--max-dice-drop", type=click.FloatRange(0, 1),
              help=f"Largest Dice loss against FP32 on the verification frames' masks, judged by the upper "
                   f"{DROP_CONFIDENCE:.0%} confidence bound of the mean per-frame drop (fewer frames, wider bound) "
                   f"[{DEFAULT_MAX_DICE_DROP} when the frames have masks]; INT8 keeps its most sensitive layers in float "
                   "until it holds (and --min-agreement).")
@click.option("--verify-count", default=DEFAULT_VERIFY_COUNT, show_default=True, type=click.IntRange(min=1),
              help="Frames the checks run on: frames of --calib-data that calibration did not use first, then "
                   "calibration frames up to this count (all frames of a smaller folder).")
@click.option("--threads", type=click.IntRange(min=1), help="CPU threads for the verification runs.")
@click.option("--engine", is_flag=True, help="Also build TensorRT engines of the fp16 and int8 models (needs TensorRT and a GPU).")
@click.option("--io", "io", default="tensor", show_default=True,
              help="Comma list: tensor (model.<p>.onnx, float32 NCHW in, logits out), frames (frames.<p>.onnx, "
                   "uint8 N x H x W x 3 RGB in, uint8 mask and float32 probability out), holoscan (holoscan.<p>.onnx, "
                   "float32 NHWC RGB 0-1 in), deepstream (deepstream.<p>.onnx, float32 NCHW RGB 0-1 in); the last two "
                   "output probability and logits, normalisation inside the graph.")
def export(checkpoint: Path, out: Path, precisions: str, calib_data: str | None, calib_count: int, calib_batch: int,
           calib_method: str, calib_cache: Path | None, exclude: str | None, image_size: tuple[int, int] | None, opset: int,
           static_batch: bool, dynamic_size: bool, min_agreement: float | None, max_dice_drop: float | None,
           verify_count: int, threads: int | None, engine: bool, io: str) -> None:
    """Export a checkpoint to verified FP32, FP16 and INT8 ONNX files; INT8 (in the default
    --precision) needs calibration frames: --calib-data."""
    from convseg_deploy.exporters.pipeline import export_artifacts

    if engine:  # before minutes of export: --engine promises engines, so no TensorRT is an error, not a note
        from convseg_deploy.hardware.gpu import import_tensorrt

        import_tensorrt()

    manifest = export_artifacts(checkpoint, out, csv_list(precisions), calib_data=calib_data, calib_count=calib_count,
                                calib_batch=calib_batch, calib_method=calib_method, calib_cache=calib_cache,
                                image_size=_size(image_size), opset=opset, static_batch=static_batch,
                                dynamic_size=dynamic_size, exclude=csv_list(exclude), min_agreement=min_agreement,
                                max_dice_drop=AUTO_DICE_DROP if max_dice_drop is None else max_dice_drop,
                                verify_count=verify_count, threads=threads, io=csv_list(io), log=click.echo)
    written = [a["file"] for a in manifest["artifacts"] + manifest.get("frames_artifacts", [])]
    click.echo(f"wrote {', '.join(written)} and manifest.json to {out}")
    if engine:
        from convseg_deploy.exporters.tensorrt_builder import build_engine

        for art in manifest["artifacts"]:
            if art["precision"] not in ("fp16", "int8"):
                continue
            sidecar = build_engine(out / art["file"])  # no GPU or pycuda: a one-line error, exit 1
            click.echo(f"built {sidecar['engine_file']} ({sidecar['precision']}, {sidecar['gpu_name']})")


@click.command("build-engine")
@click.argument("onnx", required=False, type=click.Path(path_type=Path))
@click.option("--bundle", type=click.Path(file_okay=False, path_type=Path),
              help="Build from this bundle's ONNX file of --precision (and --io) into the bundle: engine, sidecar "
                   "and manifest entry; run it on the device that will use the engine.")
@click.option("--precision", type=click.Choice(list(PRECISIONS)), help="With --bundle: which model to build.")
@click.option("--io", "io", default=IO_TENSOR, show_default=True, type=click.Choice(list(IO_KINDS)),
              help="With --bundle: which I/O variant of that precision (model.<p>.onnx is tensor).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Engine file [ONNX with .engine].")
@click.option("--min-batch", default=1, show_default=True, type=int)
@click.option("--opt-batch", default=1, show_default=True, type=int)
@click.option("--max-batch", default=8, show_default=True, type=int)
@click.option("--min-size", nargs=2, type=int, help="H W minimum, for ONNX files with dynamic size.")
@click.option("--opt-size", nargs=2, type=int, help="H W TensorRT tunes for.")
@click.option("--max-size", nargs=2, type=int, help="H W maximum.")
@click.option("--workspace-mib", type=int, help="Builder workspace limit in MiB.")
@click.option("--timing-cache", type=click.Path(dir_okay=False, path_type=Path), help="Timing cache file, read and updated.")
@click.option("--builder-opt-level", type=click.IntRange(0, 5), help="Builder optimisation level 0-5.")
@click.option("--hardware-compat", is_flag=True, help="Build for any Ampere-or-newer GPU (same TensorRT version).")
@click.option("--version-compatible", is_flag=True, help="Also run on later TensorRT versions of the same major (slower).")
@click.option("--device", default=0, show_default=True, type=click.IntRange(min=0), help="CUDA device to build on (and for).")
@click.option("--dla-core", type=click.IntRange(min=0), help="Build for this DLA core (Jetson AGX Orin: 0 or 1).")
@click.option("--gpu-fallback", is_flag=True, help="With --dla-core: run layers the DLA cannot on the GPU.")
def build_engine_command(onnx: Path | None, bundle: Path | None, precision: str | None, io: str, out: Path | None,
                         min_batch: int, opt_batch: int, max_batch: int, min_size: tuple[int, int] | None,
                         opt_size: tuple[int, int] | None, max_size: tuple[int, int] | None, workspace_mib: int | None,
                         timing_cache: Path | None, builder_opt_level: int | None, hardware_compat: bool,
                         version_compatible: bool, device: int, dla_core: int | None, gpu_fallback: bool) -> None:
    """Build a strongly typed TensorRT engine from an exported ONNX file (or into a bundle)."""
    from convseg_deploy.exporters.tensorrt_builder import build_engine

    options = dict(min_batch=min_batch, opt_batch=opt_batch, max_batch=max_batch, min_size=_size(min_size),
                   opt_size=_size(opt_size), max_size=_size(max_size), workspace_mib=workspace_mib,
                   timing_cache=timing_cache, builder_opt_level=builder_opt_level, hardware_compat=hardware_compat,
                   version_compatible=version_compatible, device=device, dla_core=dla_core, gpu_fallback=gpu_fallback)
    if bundle is not None:
        if onnx is not None or out is not None:
            raise click.UsageError("--bundle builds from the bundle's own ONNX file into the bundle: drop ONNX and --out")
        if precision is None:
            raise click.UsageError("--bundle needs --precision (fp32, fp16, int8): which of its models to build")
        from convseg_deploy.exporters.bundle_engine import build_into_bundle

        entry = build_into_bundle(bundle, precision, io, log=click.echo, **options)
        click.echo(f"built {entry['file']} ({entry['precision']}, TensorRT {entry['tensorrt_version']}, {entry['gpu_name']} "
                   f"sm_{str(entry['compute_capability']).replace('.', '')}) from {entry['onnx_file']} into {bundle}; "
                   f"check it with 'convseg-deploy verify {bundle}'")
        return
    if onnx is None:
        raise click.UsageError("give an ONNX file, or --bundle BUNDLE --precision P")
    if precision is not None or io != IO_TENSOR:
        raise click.UsageError("--precision and --io pick a model of a bundle: add --bundle, or drop them")
    if not onnx.exists():
        raise ConvSegError(f"ONNX file {onnx} not found")
    sidecar = build_engine(onnx, out, **options)
    where = f"DLA core {dla_core} of " if dla_core is not None else ""
    click.echo(f"built {sidecar['engine_file']} ({sidecar['precision']}, TensorRT {sidecar['tensorrt_version']}, "
               f"{where}{sidecar['gpu_name']} sm_{sidecar['compute_capability'].replace('.', '')}) with sidecar .json")


def _batches(value: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in csv_list(value))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a comma list of integers (e.g. 4,8)") from None


@click.command("triton")
@click.option("--artifacts", required=True, help="Export folder, bundle, or comma list of .onnx/.engine files.")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Model repository to write (new or empty).")
@click.option("--name", default="convseg", show_default=True, help="Model-name prefix (<name>_<precision>_<backend>).")
@click.option("--kind", default="gpu", show_default=True, type=click.Choice(["gpu", "cpu"]), help="Instance kind.")
@click.option("--backend", "backends", default="onnxruntime", show_default=True,
              help="Comma list of how ONNX files are served: onnxruntime (Triton's backend), python (ONNX Runtime "
                   "inside Triton's Python backend). Engines are always tensorrt_plan.")
@click.option("--max-batch", default=8, show_default=True, type=int, help="Largest server-side batch (ONNX models).")
@click.option("--preferred-batch", default="4,8", show_default=True, help="Batch sizes the dynamic batcher aims for.")
@click.option("--queue-delay-us", default=500, show_default=True, type=int, help="How long a request may wait for a batch.")
@click.option("--instances", default=1, show_default=True, type=int, help="Model instances per GPU (or per server on CPU).")
@click.option("--threads", default=0, show_default=True, type=int, help="ONNX Runtime threads per instance (0: its default).")
@click.option("--no-trt-accelerator", is_flag=True, help="GPU ONNX Runtime models without the TensorRT execution accelerator.")
def triton_command(artifacts: str, out: Path, name: str, kind: str, backends: str, max_batch: int, preferred_batch: str,
                   queue_delay_us: int, instances: int, threads: int, no_trt_accelerator: bool) -> None:
    """Write a Triton Inference Server model repository from exported models."""
    from convseg_deploy.exporters.triton_repo import write_repository
    from convseg_deploy.exporters.triton_spec import RepoOptions

    options = RepoOptions(name=name, kind=kind, backends=tuple(csv_list(backends)), max_batch=max_batch,
                          preferred_batch=_batches(preferred_batch), queue_delay_us=queue_delay_us, instances=instances,
                          trt_accelerator=not no_trt_accelerator, threads=threads)
    served = write_repository(artifacts, out, options)
    for model in served:
        click.echo(f"  {model.name}: {model.platform}, {model.precision}, max batch {model.max_batch}")
    click.echo(f"wrote {len(served)} model(s), config.pbtxt each, and README.md to {out}")
