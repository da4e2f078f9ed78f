"""The ``convseg-deploy`` command line: one click group, one function per command.

Commands only parse options and call library code; library errors (ConvSegError) become a
one-line ``Error: ...`` with exit 1 here, in one place, unless --debug asks for the traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from convseg_deploy.version import __version__
from convseg_deploy.distributed import DEFAULT_TIMEOUT_S, is_main_process
from convseg_deploy.errors import ConvSegError


# Modules an install may lack, and the extra that brings each (setup.cfg's extras_require).
OPTIONAL_MODULES = {"torch": "train", "torchvision": "train", "timm": "train",
                    "onnxruntime": "cpu", "modelopt": "export", "onnxconverter_common": "export",
                    "openvino": "openvino", "av": "live", "tritonclient": "triton"}


class ConvSegGroup(click.Group):
    """Turns the project's exceptions into click errors (exit 1) for every command."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ConvSegError as exc:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            raise click.ClickException(str(exc)) from None
        except ModuleNotFoundError as exc:
            top = (exc.name or "").partition(".")[0]
            if top not in OPTIONAL_MODULES or (ctx.obj and ctx.obj.get("debug")):
                raise
            extra = OPTIONAL_MODULES[top]
            hint = " (or [gpu] for NVIDIA's build)" if extra == "cpu" else ""
            raise click.ClickException(
                f"this command needs {top}, which this install leaves out: pip install \"convseg-deploy[{extra}]\"{hint}"
            ) from None
        except OSError as exc:  # disk full, permissions, a vanished file: where and why, on one line
            if ctx.obj and ctx.obj.get("debug"):
                raise
            where = f"{exc.filename}: " if exc.filename else ""
            raise click.ClickException(f"{where}{exc.strerror or exc}") from None
        except KeyboardInterrupt:
            raise click.ClickException("interrupted; nothing half-written was left under the final names") from None


@click.group(cls=ConvSegGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="convseg-deploy")
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """Train, export, benchmark and deploy ConvSegNet polyp segmentation."""
    ctx.ensure_object(dict)["debug"] = debug


@main.command()
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--count", default=200, show_default=True, type=click.IntRange(min=1), help="Number of frames.")
@click.option("--size", default=256, show_default=True, type=int, help="Frame side in pixels (multiple of 16).")
@click.option("--seed", default=0, show_default=True, type=int, help="Random seed; same seed, same files.")
def synth(out: Path, count: int, size: int, seed: int) -> None:
    """Write a synthetic Kvasir-SEG-layout polyp dataset."""
    from convseg_deploy.synth import generate_dataset

    generate_dataset(out, count=count, size=size, seed=seed)
    click.echo(f"wrote {count} synthetic frames ({size}x{size}, seed {seed}) to {out}")


def _command_line(ctx: click.Context, skip: set[str]) -> list[str]:
    """The options this command was given, as a command line (to start it again under torchrun)."""
    args: list[str] = []
    for param in ctx.command.params:
        value = ctx.params.get(param.name)
        if param.name in skip or value is None or not isinstance(param, click.Option):
            continue
        if param.is_flag and param.secondary_opts:  # --x/--no-x
            args.append(param.opts[0] if value else param.secondary_opts[0])
        elif param.is_flag:
            if value:
                args.append(param.opts[0])
        else:
            args += [param.opts[0], str(value)]
    return args


def _train_default(name: str) -> Any:
    """TrainConfig's default of ``name``, for the help text (one place for each default)."""
    from convseg_deploy.config import TrainConfig

    return TrainConfig.__dataclass_fields__[name].default


_ON_OFF = {True: "on", False: "off"}


def _train_config(config_file: Path | None, overrides: dict[str, Any]) -> Any:
    import yaml

    from convseg_deploy.config import TrainConfig

    values: dict[str, Any] = {}
    if config_file:
        try:
            values = yaml.safe_load(config_file.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConvSegError(f"config {config_file} cannot be read as YAML ({type(exc).__name__}); fix or remove it") from None
        if not isinstance(values, dict):
            raise ConvSegError(f"config {config_file} must be a mapping of option: value")
        known = set(TrainConfig.__dataclass_fields__)
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConvSegError(f"config {config_file}: unknown option {unknown[0]!r}; known: {', '.join(sorted(known - {'extra'}))}")
    values.update({k: v for k, v in overrides.items() if v is not None})
    if "image_size" in values:
        size = values["image_size"]
        values["image_size"] = (size, size) if isinstance(size, int) else tuple(size) if isinstance(size, list) else size
    return TrainConfig(**values)


@main.command()
@click.option("--data", required=True, type=click.Path(path_type=Path),
              help="Dataset folder (Kvasir-SEG, BKAI-IGH or CVC-ClinicDB layout).")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Run folder for checkpoints and logs.")
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="YAML file of training options.")
@click.option("--encoder", help=f"timm encoder name [{_train_default('encoder')}].")
@click.option("--decoder-channels", type=int,
              help=f"Width of the decoder and CFR blocks [{_train_default('decoder_channels')}, as in the paper].")
@click.option("--image-size", type=int, help=f"Square input size, a multiple of 16 [{_train_default('image_size')[0]}].")
@click.option("--crop-size", type=int, help="Train on random square crops of this side (same pixel scale, less compute); "
              "validation uses whole frames [off].")
@click.option("--epochs", type=int, help=f"Maximum epochs [{_train_default('epochs')}].")
@click.option("--batch-size", type=int, help=f"Frames per step [{_train_default('batch_size')}].")
@click.option("--lr", type=float, help=f"Adam learning rate [{_train_default('lr'):g}].")
@click.option("--device", help=f"auto, cpu or cuda[:N] [{_train_default('device')}].")
@click.option("--seed", type=int, help=f"Seed for split, init and augmentation [{_train_default('seed')}].")
@click.option("--max-train-images", type=int, help="Use only the first N training frames.")
@click.option("--augment/--no-augment", default=None,
              help=f"Rotate/flip/dropout augmentations [{_ON_OFF[_train_default('augment')]}].")
@click.option("--pretrained/--no-pretrained", default=None,
              help=f"Start from timm's ImageNet weights (needs network) [{_ON_OFF[_train_default('pretrained')]}].")
@click.option("--backbone-weights", type=click.Path(path_type=Path), help="Local encoder state_dict (offline --pretrained).")
@click.option("--resume", type=click.Path(path_type=Path), help="Continue from a last.pt.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@click.option("--sync-bn/--no-sync-bn", default=None,
              help=f"Under torchrun: BatchNorm statistics over all processes [{_ON_OFF[_train_default('sync_bn')]}].")
@click.option("--nproc-per-node", type=click.IntRange(min=1),
              help="Start torchrun with N processes on this machine (one per GPU; --batch-size is per process).")
@click.option("--dist-timeout", type=click.FloatRange(min=1), default=DEFAULT_TIMEOUT_S, show_default=True,
              help="Seconds a process waits for the others (rendezvous, each collective) before failing.")
@click.pass_context
def train(ctx: click.Context, data: Path, out: Path, config_file: Path | None, resume: Path | None, no_progress: bool,
          nproc_per_node: int | None, dist_timeout: float, **opts: Any) -> None:
    """Train ConvSegNet on a polyp dataset (also under torchrun: one process per GPU)."""
    if nproc_per_node:
        from convseg_deploy.distributed import launch_local

        debug = ["--debug"] if ctx.obj and ctx.obj.get("debug") else []
        launch_local(nproc_per_node, [*debug, "train", *_command_line(ctx, skip={"nproc_per_node"})])
        click.echo(f"training on {nproc_per_node} processes finished; checkpoints in {out}")
        return
    from convseg_deploy.train import train as run_training

    if opts.get("backbone_weights") is not None:
        opts["backbone_weights"] = str(opts["backbone_weights"])
    cfg = _train_config(config_file, opts)
    best = run_training(cfg, data, out, resume=resume, progress=not no_progress, log=click.echo,
                        dist_timeout_s=dist_timeout)
    if is_main_process():
        click.echo(f"best validation dice {best.get('val_dice', float('nan')):.4f} (epoch {best.get('epoch')}); checkpoints in {out}")


@main.command()
@click.option("--checkpoint", required=True, type=click.Path(path_type=Path), help="Trained checkpoint (.pt) to slim.")
@click.option("--data", required=True, type=click.Path(path_type=Path), help="The dataset it was trained on.")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Run folder (best.pt, ...).")
@click.option("--flops", required=True, type=float, help="FLOPs budget: fraction of the unpruned model's, in (0, 1).")
@click.option("--epochs", default=6, show_default=True, type=click.IntRange(min=1), help="Fine-tuning epochs.")
@click.option("--max-dice-drop", default=0.01, show_default=True, type=float,
              help="Largest validation Dice loss against the parent that passes.")
@click.option("--distill/--no-distill", default=True, show_default=True,
              help="Fine-tune with the parent's probabilities as soft targets.")
@click.option("--batch-size", default=8, show_default=True, type=click.IntRange(min=1))
@click.option("--lr", default=2e-3, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="Peak Adam learning rate of the fine-tuning (one cycle: warm-up, then cosine decay to lr/100).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda[:N].")
@click.option("--seed", default=42, show_default=True, help="Seed of the split (as in training) and the fine-tuning.")
@click.option("--search-frames", default=16, show_default=True, type=click.IntRange(min=2),
              help="Training frames that score each pruning candidate.")
@click.option("--channel-divisor", default=8, show_default=True, type=click.IntRange(min=1),
              help="Pruned channel counts are multiples of this.")
@click.option("--resume", type=click.Path(path_type=Path), help="Continue the fine-tuning from RUN/last.pt.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def slim(checkpoint: Path, data: Path, out: Path, flops: float, resume: Path | None, no_progress: bool,
         **opts: Any) -> None:
    """Prune to a FLOPs budget (ModelOpt FastNAS) and fine-tune with distillation, Dice-bounded."""
    from convseg_deploy.slim import BEST_NAME, SlimOptions, slim as run_slim

    record = run_slim(checkpoint, data, out, SlimOptions(flops=flops, **opts), resume=resume, progress=not no_progress,
                      log=click.echo)
    click.echo(f"slimmed to {record['flops_after'] / record['flops_unpruned']:.1%} of the unpruned FLOPs; validation "
               f"Dice {record['val_dice']:.4f} (parent {record['parent_val_dice']:.4f}); checkpoint {out / BEST_NAME}")


def _print_metrics(title: str, metrics: dict[str, Any]) -> None:
    click.echo(title)
    for key in ("dice", "iou", "precision", "recall", "f2", "accuracy"):
        click.echo(f"  {key:<10} {metrics[key]:.4f}")
    click.echo(f"  {'images':<10} {metrics['images']}")


@main.command()
@click.option("--checkpoint", required=True, type=click.Path(path_type=Path), help="Checkpoint (.pt) to evaluate.")
@click.option("--data", required=True, type=click.Path(path_type=Path), help="Dataset folder.")
@click.option("--split", default="test", show_default=True, type=click.Choice(["train", "val", "test", "all"]))
@click.option("--batch-size", default=8, show_default=True, type=click.IntRange(min=1))
@click.option("--device", default="auto", show_default=True)
@click.option("--seed", default=42, show_default=True, help="Seed of the split (as in training).")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path), help="Also write the metrics as JSON.")
def evaluate(checkpoint: Path, data: Path, split: str, batch_size: int, device: str, seed: int, json_out: Path | None) -> None:
    """Print Dice, IoU, precision, recall, F2 and accuracy of a checkpoint."""
    from convseg_deploy.data import find_samples, load_samples, split_samples
    from convseg_deploy.evaluate import evaluate_runner
    from convseg_deploy.fsutil import write_json
    from convseg_deploy.runtime.torch_runner import TorchRunner

    samples = split_samples(find_samples(data), split, data, seed=seed)
    if not samples:
        raise ConvSegError(f"the {split} split of {data} is empty")
    with TorchRunner(checkpoint, device=device) as runner:
        images, masks = load_samples(samples, runner.preprocess.size)
        metrics = evaluate_runner(runner, images, masks, batch_size)
    _print_metrics(f"{checkpoint} on {data} ({split}, {metrics['images']} images)", metrics)
    if json_out:
        write_json(json_out, metrics)
        click.echo(f"wrote {json_out}")


from convseg_deploy.exporters.commands import build_engine_command, export, triton_command  # noqa: E402

main.add_command(export)
main.add_command(build_engine_command)
main.add_command(triton_command)

from convseg_deploy.benchmarks.command import bench  # noqa: E402
main.add_command(bench)


from convseg_deploy.deploy.commands import bundle, deepstream, doctor, holoscan, predict, verify  # noqa: E402
for _cmd in (bundle, verify, predict, doctor, deepstream, holoscan):
    main.add_command(_cmd)

from convseg_deploy.live.command import live  # noqa: E402
main.add_command(live)


if __name__ == "__main__":  # pragma: no cover
    main()
