"""The ``live`` click command: options in, ``live.run.live`` called, the end turned into an exit code.

Exit codes: 0 when the source ended, or ``--duration``/``--max-frames`` was reached, and every
output is complete; 130 after Ctrl-C (the summary is written first); 1 with one ``Error:`` line
when the source was lost, the run failed, or an output (recording, stream, frames.jsonl)
stopped; 2 for bad usage (an unknown ``--backend``, a negative ``--max-mask-age-ms``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from convseg_deploy.errors import ConvSegError

BACKENDS = ("auto", "onnxruntime", "openvino", "tensorrt", "triton")
INTERRUPTED = 130  # 128 + SIGINT, as shells report a Ctrl-C


def _ffmpeg_options(values: tuple[str, ...]) -> dict[str, str]:
    options = {}
    for value in values:
        key, sep, setting = value.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{value!r}: give KEY=VALUE (for example rtsp_transport=tcp)",
                                     param_hint="--ffmpeg-option")
        options[key.strip()] = setting.strip()
    return options


def _one_line(summary: dict[str, Any], out: Path) -> str:
    latency = summary["latency_ms"]
    timing = f"latency p50 {latency['p50']:.0f} ms p99 {latency['p99']:.0f} ms" if latency["p50"] is not None \
        else "no frame inferred"
    fps = f" ({summary['fps_in']:.1f} fps)" if summary["fps_in"] else ""
    return (f"live: {summary['frames_in']} frames in{fps}, {summary['frames_inferred']} inferred, "
            f"{summary['frames_skipped']} skipped, {summary['frames_out']} out; {timing}; ended by "
            f"{summary['ended_by']}; summary in {out / 'summary.json'}")


@click.command()
@click.option("--model", default=None, help="A .onnx or .engine file or a bundle folder; with --backend triton, the "
              "served model's name [the server's only frames-in model].")
@click.option("--source", required=True, help="A camera (0, /dev/video2), a video file, a URL (rtsp, rtsps, udp, tcp, "
              "srt, rtmp, http, https) or gst:PIPELINE ! appsink.")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for summary.json and frames.jsonl.")
@click.option("--backend", default="auto", show_default=True, type=click.Choice(BACKENDS),
              help="Where the model runs, as for predict; triton: a server's frames-in model (--triton-url).")
@click.option("--triton-url", help="HOST:PORT of a Triton server (--backend triton).")
@click.option("--protocol", default="grpc", show_default=True, type=click.Choice(["grpc", "http"]),
              help="Triton protocol.")
@click.option("--device", help="As for predict: a CUDA device index, or with --backend openvino cpu, gpu or npu.")
@click.option("--precision", type=click.Choice(["fp32", "fp16", "int8", "int8-cpu"]), help="Which model of a bundle.")
@click.option("--threads", type=click.IntRange(min=1), help="CPU threads of the backend [its default].")
@click.option("--realtime", is_flag=True, help="Pace a video file at its own frame rate (as a camera); without it a "
              "file is read as fast as the model goes and every frame is inferred.")
@click.option("--duration", type=click.FloatRange(min=0, min_open=True), help="Stop after S seconds.")
@click.option("--max-frames", type=click.IntRange(min=1), help="Stop after N frames.")
@click.option("--max-mask-age-ms", default=200.0, show_default=True, type=click.FloatRange(min=0),
              help="Masks older than this are not drawn (the frame says so in a corner).")
@click.option("--reconnect-timeout", default=10.0, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="Seconds a dropped camera, stream or pipeline is reopened before the run ends.")
@click.option("--open-timeout", default=5.0, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="Seconds a stream or pipeline may take to deliver its first frame.")
@click.option("--stall-timeout", default=2.0, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="Seconds without a frame after which a live source counts as dropped (and is reopened).")
@click.option("--record", type=click.Path(dir_okay=False, path_type=Path),
              help="Record the overlaid video (.mp4, .mkv, .mov, .avi, .ts) at the source's rate.")
@click.option("--stream-out", help="Send the overlaid video as a stream (udp://HOST:PORT: MPEG-TS).")
@click.option("--display", is_flag=True, help="Show the overlaid video in a window (q or Esc ends the run).")
@click.option("--threshold", type=click.FloatRange(0, 1, min_open=True, max_open=True), help="Mask threshold [the model's].")
@click.option("--ffmpeg-option", "ffmpeg_option", multiple=True, metavar="KEY=VALUE",
              help="FFmpeg option for a file or URL source (rtsp_transport=tcp); repeatable.")
@click.option("--overwrite", is_flag=True, help="Clear an --out that holds an earlier run's outputs first.")
@click.option("--no-status", is_flag=True, help="No status line on stderr.")
@click.option("--spin/--no-spin", default=False, show_default=True,
              help="ONNX Runtime's CPU threads busy-wait between operators (fastest with nothing else on the "
                   "machine; the default --no-spin leaves the cores to video decoding and encoding).")
@click.option("--pin-cores", is_flag=True, help="Linux: the model's --threads N on N cores of their own, the video "
              "(decoding, drawing, encoding) on the rest; a steadier latency where they would share cores.")
@click.pass_context
def live(ctx: click.Context, model: str | None, source: str, out: Path, backend: str, triton_url: str | None,
         protocol: str, device: str | None, precision: str | None, threads: int | None, realtime: bool,
         duration: float | None, max_frames: int | None, max_mask_age_ms: float, reconnect_timeout: float,
         open_timeout: float, stall_timeout: float, record: Path | None, stream_out: str | None, display: bool, threshold: float | None,
         ffmpeg_option: tuple[str, ...], overwrite: bool, no_status: bool, spin: bool, pin_cores: bool) -> None:
    """Segment a camera, capture card, stream or video live, with overlays out."""
    from convseg_deploy.deploy.commands import _split_device
    from convseg_deploy.live.run import LiveOptions, failed_outputs
    from convseg_deploy.live.run import live as run_live

    if backend != "triton" and not model:
        raise click.UsageError("--model is required (a .onnx or .engine file or a bundle), except with --backend triton")
    cuda_device, openvino_device = _split_device(device, backend)
    options = LiveOptions(realtime=realtime, max_mask_age_ms=max_mask_age_ms, duration=duration, max_frames=max_frames,
                          reconnect_timeout=reconnect_timeout, open_timeout=open_timeout,
                          stall_timeout=stall_timeout, record=record,
                          stream_out=stream_out, display=display, threshold=threshold, threads=threads, spin=spin,
                          pin_cores=pin_cores,
                          cuda_device=cuda_device, status=not no_status, ffmpeg_options=_ffmpeg_options(ffmpeg_option))

    def log(message: str) -> None:
        click.echo(message, err=True)

    try:
        summary = run_live(model or "", source, out, backend=backend, precision=precision, device=openvino_device,
                           triton_url=triton_url, protocol=protocol, options=options, overwrite=overwrite, log=log)
    except KeyboardInterrupt:
        click.echo(f"interrupted before the run started; {out / 'summary.json'} says so", err=True)
        ctx.exit(INTERRUPTED)
    click.echo(_one_line(summary, out))
    if summary["ended_by"] == "interrupt":
        ctx.exit(INTERRUPTED)
    if summary["ended_by"] in ("source_lost", "error"):
        raise ConvSegError(summary["error"] or f"the run ended by {summary['ended_by']}")
    problems = failed_outputs(summary)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise ConvSegError(f"output failed: {problems[0]}{more}; inference and the other outputs went on to the end, "
                           f"{out / 'summary.json'} lists what was kept")
