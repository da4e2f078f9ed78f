"""The ``convseg-deploy`` command line: one click group, one function per command.

Commands only parse options and call library code; library errors (ConvSegError) become a
one-line ``Error: ...`` with exit 1 here, in one place, unless --debug asks for the traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from convseg_deploy import __version__
from convseg_deploy.distributed import DEFAULT_TIMEOUT_S, is_main_process
from convseg_deploy.errors import ConvSegError


TRAINING_MODULES = ("torch", "torchvision", "timm")


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
            if exc.name not in TRAINING_MODULES or (ctx.obj and ctx.obj.get("debug")):
                raise
            raise click.ClickException(
                f"this command needs {exc.name}, which the edge install leaves out: pip install \"convseg-deploy[train]\""
            ) from None
        except OSError as exc:  # disk full, permissions, a vanished file: where and why, on one line
            if ctx.obj and ctx.obj.get("debug"):
                raise
            where = f"{exc.filename}: " if exc.filename else ""
            raise click.ClickException(f"{where}{exc.strerror or exc}") from None
        except KeyboardInterrupt:
            raise click.ClickException("interrupted; nothing half-written was left under the final names") from None


def _csv(value: str | None) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()] if value else []


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
@click.option("--encoder", help="timm encoder name [resnet50].")
@click.option("--decoder-channels", type=int, help="Width of the decoder and CFR blocks [64, as in the paper].")
@click.option("--image-size", type=int, help="Square input size, a multiple of 16 [256].")
@click.option("--crop-size", type=int, help="Train on random square crops of this side (same pixel scale, less compute); "
              "validation uses whole frames [off].")
@click.option("--epochs", type=int, help="Maximum epochs [100].")
@click.option("--batch-size", type=int, help="Frames per step [16].")
@click.option("--lr", type=float, help="Adam learning rate [1e-4].")
@click.option("--device", help="auto, cpu or cuda[:N] [auto].")
@click.option("--seed", type=int, help="Seed for split, init and augmentation [42].")
@click.option("--max-train-images", type=int, help="Use only the first N training frames.")
@click.option("--augment/--no-augment", default=None, help="Rotate/flip/dropout augmentations [on].")
@click.option("--pretrained/--no-pretrained", default=None, help="Start from timm's ImageNet weights (needs network).")
@click.option("--backbone-weights", type=click.Path(path_type=Path), help="Local encoder state_dict (offline --pretrained).")
@click.option("--resume", type=click.Path(path_type=Path), help="Continue from a last.pt.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@click.option("--sync-bn/--no-sync-bn", default=None, help="Under torchrun: BatchNorm statistics over all processes [off].")
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


from exporters.commands import build_engine_command, export, triton_command  # noqa: E402

main.add_command(export)
main.add_command(build_engine_command)
main.add_command(triton_command)

from benchmarks.command import bench  # noqa: E402
main.add_command(bench)


from convseg_deploy.deploy.commands import bundle, deepstream, doctor, holoscan, predict, verify  # noqa: E402
for _cmd in (bundle, verify, predict, doctor, deepstream, holoscan):
    main.add_command(_cmd)

from convseg_deploy.live.command import live  # noqa: E402
main.add_command(live)


if __name__ == "__main__":  # pragma: no cover
    main()
