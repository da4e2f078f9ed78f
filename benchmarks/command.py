"""``convseg-deploy bench``: plan, run every row, judge, then print and write the report.

Only click is imported at module level, so ``convseg-deploy --help`` stays fast; the bench's
modules (and through the runners torch, onnxruntime, tensorrt) load when the command runs.
"""

from __future__ import annotations

from pathlib import Path

import click

from convseg_deploy.cli_values import csv_list
from convseg_deploy.artifacts.names import DEFAULT_MAX_DICE_DROP, DEFAULT_MIN_AGREEMENT

DEFAULT_ITERS = 20


def _batch_sizes(_ctx: click.Context, _param: click.Parameter, value: str) -> list[int]:
    try:
        sizes = [int(v) for v in csv_list(value)]
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a comma list of integers (e.g. 1,8)") from None
    if not sizes or any(s < 1 for s in sizes):
        raise click.BadParameter(f"{value!r}: batch sizes must be integers >= 1")
    return list(dict.fromkeys(sizes))


@click.command()
@click.option("--checkpoint", type=click.Path(path_type=Path), help="Checkpoint (.pt): PyTorch rows and the parity reference.")
@click.option("--artifacts", help="Export folder (manifest, model.*.onnx, *.engine) or comma list of .onnx/.engine files.")
@click.option("--data", required=True, type=click.Path(path_type=Path), help="Dataset folder; images only gives a speed-only bench.")
@click.option("--split", default="all", show_default=True, type=click.Choice(["train", "val", "test", "all"]),
              help="Which split of --data to run on.")
@click.option("--max-images", type=click.IntRange(min=1), help="Use only the first N images of the split.")
@click.option("--image-size", nargs=2, type=int, default=None,
              help="H W the PyTorch rows run at [the artifacts' size when they share one, else the checkpoint's].")
@click.option("--backends", default="torch,onnxruntime,openvino,tensorrt", show_default=True,
              help="Comma list of backends to run.")
@click.option("--providers", default="cpu,cuda,tensorrt", show_default=True,
              help="Comma list of devices/execution providers for PyTorch and ONNX Runtime rows; OpenVINO rows "
                   "run on cpu and the Intel devices gpu and npu.")
@click.option("--batch-sizes", default="1,8", show_default=True, callback=_batch_sizes, help="Comma list of batch sizes.")
@click.option("--warmup", default=3, show_default=True, type=click.IntRange(min=0), help="Untimed iterations first.")
@click.option("--warmup-time", default=0.0, show_default=True, type=click.FloatRange(min=0),
              help="Warm up for at least S seconds too (GPUs: 2 or more, so that clocks settle).")
@click.option("--iters", type=click.IntRange(min=1), help=f"Timed iterations per row [{DEFAULT_ITERS}].")
@click.option("--duration", type=click.FloatRange(min=0, min_open=True), help="Time each row for S seconds instead of --iters.")
@click.option("--threads", type=click.IntRange(min=1), help="Threads for every CPU backend [physical cores available].")
@click.option("--device", default=0, show_default=True, type=click.IntRange(min=0), help="CUDA device of the GPU rows.")
@click.option("--max-dice-drop", default=DEFAULT_MAX_DICE_DROP, show_default=True, type=float,
              help="Largest allowed Dice drop vs the reference.")
@click.option("--min-agreement", default=min(DEFAULT_MIN_AGREEMENT.values()), show_default=True, type=float,
              help="Smallest allowed mask agreement with the reference.")
@click.option("--min-fps", type=float, help="Model-only images/s every row must reach.")
@click.option("--require", help="Comma list of backends (or backend/provider) that must run, not be skipped.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), help="Folder for report.json/.csv/.md and plots.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@click.option("--triton-url", help="HOST:PORT of a Triton server for --backends triton (8001 gRPC, 8000 HTTP by default).")
@click.option("--protocol", default="grpc", show_default=True, type=click.Choice(["grpc", "http"]), help="Triton client protocol.")
@click.option("--reprobe", is_flag=True, help="Measure the machine's peak GMAC/s again instead of reading the cached probe.")
@click.option("--concurrency", default="1,4", show_default=True, callback=_batch_sizes,
              help="Comma list of concurrent request streams for the triton rows (one frame per request).")
def bench(checkpoint: Path | None, artifacts: str | None, data: Path, split: str, max_images: int | None,
          image_size: tuple[int, int] | None, backends: str,
          providers: str, batch_sizes: list[int], warmup: int, warmup_time: float, iters: int | None,
          duration: float | None, threads: int | None, device: int, max_dice_drop: float, min_agreement: float,
          min_fps: float | None, require: str | None, out: Path | None, no_progress: bool, triton_url: str | None,
          protocol: str, reprobe: bool, concurrency: list[int]) -> None:
    """Measure speed and parity of every backend, artifact and batch size."""
    from convseg_deploy.benchmarks.gates import (
        Thresholds,
        compare,
        evaluate_gates,
        failed_gates,
        label,
        pick_reference,
    )
    from convseg_deploy.benchmarks.harness import Settings, load_dataset, run_rows
    from convseg_deploy.benchmarks.machine import describe_machine
    from convseg_deploy.hardware.cpu import physical_cores
    from convseg_deploy.benchmarks.plan import PROVIDERS, artifact_input_sizes, check_choices, plan_rows
    from convseg_deploy.config import check_image_size
    from convseg_deploy.benchmarks.plots import write_plots
    from convseg_deploy.benchmarks.report import (
        build_report,
        format_gates,
        format_table,
        notes,
        write_reports,
    )
    from convseg_deploy.runtime import BACKENDS

    wanted = check_choices(csv_list(backends), (*BACKENDS, "triton"), "--backends")
    triton = "triton" in wanted
    if triton and not triton_url:
        raise click.UsageError("--backends triton needs --triton-url HOST:PORT of a running Triton server")
    if checkpoint is None and not artifacts and not triton:
        raise click.UsageError("give --checkpoint, --artifacts or both: there is nothing to measure")
    if iters is not None and duration is not None:
        raise click.UsageError("give --iters or --duration, not both")
    if out is not None:  # before minutes of benchmarking: an unwritable --out or a second run fails now
        from convseg_deploy.fsutil import run_lock

        click.get_current_context().with_resource(run_lock(out))
    required = tuple(csv_list(require))
    for item in required:
        backend, _, provider = item.partition("/")
        check_choices([backend], (*BACKENDS, "triton"), "--require")
        if provider:
            check_choices([provider], PROVIDERS, "--require")

    rows = plan_rows(checkpoint, artifacts, [b for b in wanted if b != "triton"], csv_list(providers), batch_sizes)
    if image_size:
        check_image_size(*image_size)
    elif checkpoint is not None and len(sizes := artifact_input_sizes(rows)) == 1:
        image_size = sizes.pop()  # a checkpoint trained at another size runs at the size it was exported at
    dataset = load_dataset(data, split, max_images)
    threads = threads or physical_cores()
    settings = Settings(warmup=warmup, iters=None if duration else iters or DEFAULT_ITERS, duration=duration,
                        warmup_s=warmup_time, device=device, threads=threads, progress=not no_progress,
                        torch_size=tuple(image_size) if image_size else None)
    run = run_rows(rows, dataset, settings)
    if triton:
        from convseg_deploy.benchmarks.triton_load import run_triton

        served = run_triton(str(triton_url), protocol, concurrency, dataset, settings)
        run.results.extend(served.results)
        run.masks.update(served.masks)

    # Judging: pure functions over what was collected.
    reference = pick_reference(run.results)
    results = compare(run.results, run.masks, reference)
    thresholds = Thresholds(max_dice_drop, min_agreement, min_fps, required)
    gates = evaluate_gates(results, thresholds, reference, dataset.no_accuracy)
    # Against the machine's own limit: the probe's peaks at the rows' thread count (cached per machine).
    from convseg_deploy.benchmarks.efficiency import add_efficiency
    from convseg_deploy.hardware.peak import format_peak, machine_peak, summary

    peak = summary(machine_peak(threads, reprobe=reprobe))
    results = add_efficiency(results, peak)

    machine = describe_machine(threads, device)
    click.echo(f"machine: {machine['cpu_description']}; {threads} threads, GPU {machine['gpu'] or 'none'}; "
               f"reference: {label(reference) if reference else 'none'}")
    click.echo("peak: " + "; ".join(format_peak(peak)))
    click.echo(format_table(results))
    for line in notes(results):
        click.echo(f"  {line}")
    click.echo("")
    for line in format_gates(gates):
        click.echo(line)
    if out is not None:
        run_settings = {"data": str(data), "split": split, "images": len(dataset.samples), "batch_sizes": batch_sizes,
                        **({"triton_url": triton_url, "protocol": protocol, "concurrency": concurrency} if triton else {}),
                        "warmup": warmup, "warmup_s": warmup_time, "iters": settings.iters, "duration_s": duration,
                        "threads": threads, "device": device,
                        "thresholds": {"max_dice_drop": max_dice_drop, "min_agreement": min_agreement,
                                       "min_fps": min_fps, "require": list(required)}}
        report = build_report(machine, results, gates, reference, run_settings, dataset.no_accuracy, peak)
        write_reports(out, report, write_plots)
        click.echo(f"wrote report.json, report.csv, report.md, fps.png, dice_vs_fps.png and roofline.png to {out}")
    failed = failed_gates(gates)
    if failed:
        shown = "; ".join(failed[:5]) + (f"; and {len(failed) - 5} more" if len(failed) > 5 else "")
        raise click.ClickException(f"{len(failed)} gate(s) failed: {shown}")
