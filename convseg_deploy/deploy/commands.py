"""Click commands of the deploy stage: ``bundle``, ``verify``, ``predict``, ``doctor`` and ``deepstream``.

Each command parses its options and calls library code, imported inside the command so that
``--help`` stays fast and ONNX/TensorRT paths never import torch. Library errors (ConvSegError)
become one-line ``Error: ...`` messages in the CLI group.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from convseg_deploy.errors import ConvSegError

from convseg_deploy.artifacts.names import PRECISIONS
from convseg_deploy.config import MAX_PIXELS

PRECISION_CHOICE = click.Choice(list(PRECISIONS))


def _split(values: tuple[str, ...]) -> list[str]:
    """Repeated and comma-separated values as one list (``--pick fp32,int8 --pick x.onnx``)."""
    return [v.strip() for value in values for v in value.split(",") if v.strip()]


@click.command()
@click.option("--artifacts", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Folder with the exported model.*.onnx and built model.*.engine files.")
@click.option("--pick", "picks", multiple=True,
              help="fp32, fp16, int8, int8-cpu (all files of that precision) or a model FILE; repeatable. [all]")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Bundle folder to write.")
@click.option("--report", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Bench report.json to include [ARTIFACTS/bench/report.json when present].")
def bundle(artifacts: Path, picks: tuple[str, ...], out: Path, report: Path | None) -> None:
    """Copy models with checksums, a reference frame and usage notes into a device bundle."""
    from convseg_deploy.deploy.bundle import make_bundle

    manifest = make_bundle(artifacts, out, _split(picks), report, log=click.echo)
    files = ", ".join(e["file"] for e in manifest["artifacts"])
    bench = " with bench numbers" if manifest["bench"] else ""
    click.echo(f"wrote bundle {out}: {files}{bench}; check it on the device with 'convseg-deploy verify {out}'")


@click.command()
@click.argument("bundle_dir", metavar="BUNDLE_DIR", type=click.Path(file_okay=False, path_type=Path))
@click.option("--provider", default="cpu", show_default=True, type=click.Choice(["cpu", "cuda", "gpu", "npu"]),
              help="Device of the ONNX smoke runs: cpu or cuda (ONNX Runtime); cpu, gpu or npu (OpenVINO).")
@click.option("--backend", default="onnxruntime", show_default=True, type=click.Choice(["onnxruntime", "openvino"]),
              help="Runtime of the ONNX smoke runs.")
def verify(bundle_dir: Path, provider: str, backend: str) -> None:
    """Check a bundle's checksums, engine/device match, and one smoke inference per model."""
    from convseg_deploy.deploy.verify import CANNOT, OK, format_table, verify_bundle

    devices = {"onnxruntime": ("cpu", "cuda"), "openvino": ("cpu", "gpu", "npu")}[backend]
    if provider not in devices:
        raise click.UsageError(f"--provider {provider} is not a device of {backend}: use one of {', '.join(devices)}")
    verdict = verify_bundle(bundle_dir, provider=provider, backend=backend)
    click.echo(format_table(verdict))
    if not verdict.ok:
        raise ConvSegError("verify failed: " + "; ".join(verdict.problems()))
    passed = sum(r.status == OK for r in verdict.models)
    cannot = [r.file for r in verdict.models if r.status == CANNOT]
    extra = f"; {len(cannot)} cannot run here ({', '.join(cannot)})" if cannot else ""
    click.echo(f"bundle OK: {passed} of {len(verdict.models)} models verified{extra}")


def _split_device(device: str | None, backend: str) -> tuple[int, str]:
    """``--device`` as (CUDA device index, OpenVINO device): CUDA devices are numbers, OpenVINO's are names."""
    from convseg_deploy.deploy.select import OPENVINO_DEVICES

    if device is None:
        return 0, "cpu"
    name = device.strip().lower()
    if name.isdigit():
        if backend == "openvino":
            raise click.UsageError(f"--device {device}: OpenVINO devices are {', '.join(OPENVINO_DEVICES)}")
        return int(name), "cpu"
    if name not in OPENVINO_DEVICES:
        raise click.UsageError(f"--device {device}: use a CUDA device index (0, 1, ...) or, with --backend openvino, "
                               f"one of {', '.join(OPENVINO_DEVICES)}")
    if backend != "openvino":
        raise click.UsageError(f"--device {device} names an OpenVINO device: add --backend openvino "
                               "(CUDA devices are numbers)")
    return 0, name


@click.command()
@click.option("--model", required=True, type=click.Path(exists=True, path_type=Path),
              help="A .pt, .onnx or .engine file, or a bundle folder.")
@click.argument("inputs", nargs=-1, required=True, metavar="INPUT...")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Output folder.")
@click.option("--backend", default="auto", show_default=True,
              type=click.Choice(["auto", "torch", "onnxruntime", "openvino", "tensorrt"]),
              help="auto: a matching TensorRT engine, else ONNX Runtime CUDA, else OpenVINO on Intel CPUs "
                   "(when installed), else ONNX Runtime CPU (.pt: PyTorch).")
@click.option("--device", help="GPU backends: the CUDA device index N [0]; --backend openvino: cpu, gpu (Intel GPU) "
              "or npu [cpu].")
@click.option("--precision", type=PRECISION_CHOICE, help="Which model of a bundle to use.")
@click.option("--overlay", is_flag=True, help="Also write images with the polyp outlined (a video: an overlay video).")
@click.option("--heatmap", is_flag=True, help="Also write the probability map blended over each image.")
@click.option("--save-prob", is_flag=True, help="Also write the probability map of each image as a 16-bit PNG (0..65535).")
@click.option("--frame-pngs", is_flag=True, help="Write PNGs for every video frame too (the mask, and the --overlay, "
              "--heatmap, --save-prob images); without it a video gets records and its overlay video only.")
@click.option("--batch-size", default=4, show_default=True, type=click.IntRange(min=1), help="Frames per inference.")
@click.option("--threshold", type=click.FloatRange(0, 1, min_open=True, max_open=True),
              help="Mask threshold [the model's].")
@click.option("--overwrite", is_flag=True, help="Clear an --out that holds an earlier run's outputs first.")
@click.option("--max-pixels", type=click.IntRange(min=1), help=f"Largest image (width x height) to decode [{MAX_PIXELS}].")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def predict(model: Path, inputs: tuple[str, ...], out: Path, backend: str, device: str | None, precision: str | None,
            overlay: bool, heatmap: bool, save_prob: bool, frame_pngs: bool, batch_size: int, threshold: float | None, overwrite: bool,
            max_pixels: int | None, no_progress: bool) -> None:
    """Segment images, folders, globs or videos (INPUT...) into masks and summaries."""
    from convseg_deploy.deploy.predict import PredictOptions
    from convseg_deploy.deploy.predict import predict as run_predict

    cuda_device, openvino_device = _split_device(device, backend)
    options = PredictOptions(overlay=overlay, heatmap=heatmap, save_prob=save_prob, frame_pngs=frame_pngs,
                             batch_size=batch_size,
                             threshold=threshold, progress=not no_progress, device=cuda_device,
                             **({"max_pixels": max_pixels} if max_pixels else {}))
    run_predict(model, inputs, out, backend=backend, precision=precision, device=openvino_device, options=options,
                overwrite=overwrite, log=click.echo)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
@click.option("--threads", type=click.IntRange(min=1), help="Threads of the peak probe [physical cores available, as bench].")
@click.option("--reprobe", is_flag=True, help="Measure the peak GMAC/s again instead of reading the cached probe.")
def doctor(as_json: bool, threads: int | None, reprobe: bool) -> None:
    """Show what this machine can run and how fast it computes: Python, PyTorch, GPUs, ONNX Runtime, TensorRT, CPU, peaks."""
    from convseg_deploy.doctor import collect, format_text

    info = collect(threads=threads, reprobe=reprobe)
    click.echo(json.dumps(info, indent=2) if as_json else format_text(info))


@click.command()
@click.option("--model", required=True, type=click.Path(exists=True, path_type=Path),
              help="A bundle with a deepstream.<precision>.onnx variant (export --io ...,deepstream).")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Folder to write (new or empty).")
@click.option("--precision", type=PRECISION_CHOICE,
              help="Which variant [int8 where its engine was built on the device, else fp16, else fp32].")
@click.option("--width", default=1920, show_default=True, type=int, help="nvstreammux frame width.")
@click.option("--height", default=1080, show_default=True, type=int, help="nvstreammux frame height.")
@click.option("--video", default="video.mp4", show_default=True,
              help="The file deepstream-app's config reads (relative to --out).")
def deepstream(model: Path, out: Path, precision: str | None, width: int, height: int, video: str) -> None:
    """Write a DeepStream nvinfer config, gst-launch/deepstream-app pipelines and a mask probe for a bundle."""
    from convseg_deploy.deploy.deepstream import write_deepstream

    chosen = write_deepstream(model, out, precision, width=width, height=height, video=video, log=click.echo)
    click.echo(f"run it on the DeepStream machine: {out}/run_gst.sh VIDEO.mp4, deepstream-app -c "
               f"{out}/deepstream_app_config.txt, or python3 {out}/probe.py VIDEO.mp4 --out masks ({chosen['precision']})")


@click.command()
@click.option("--model", required=True, type=click.Path(path_type=Path),
              help="A bundle with a holoscan.<precision>.onnx variant (export --io ...,holoscan).")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Folder to write (new or empty).")
@click.option("--precision", type=PRECISION_CHOICE,
              help="Which variant InferenceOp loads [the fastest with an engine built on the device, else fp16, else fp32].")
def holoscan(model: Path, out: Path, precision: str | None) -> None:
    """Write a Holoscan application (app.py, app.yaml, README.md) that segments video with a bundle."""
    from convseg_deploy.holoscan.writer import write_holoscan

    write_holoscan(model, out, precision, log=click.echo)
    click.echo(f"run it where the Holoscan SDK is installed: python {out}/app.py --source VIDEO --out DIR "
               "[--realtime] [--max-frames N]")
