"""The command line through click's CliRunner (and a real process for tracebacks): exit codes,
one-line errors, and the synth/train/evaluate commands."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner, Result

from convseg_deploy import ConvSegError, __version__
from convseg_deploy.cli import main
from convseg_deploy.data import find_samples
from convseg_deploy.imaging import read_image

METRIC_KEYS = {"dice", "iou", "precision", "recall", "f2", "accuracy", "images"}
REPO = Path(__file__).resolve().parents[1]


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args])


def assert_user_error(result: Result, *fragments: str) -> str:
    """Exit 1, and stderr is exactly one line ``Error: ...`` mentioning ``fragments``; no traceback."""
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit)  # click's clean exit, not an escaped exception
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ")
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0]
    return lines[0]


@pytest.fixture()
def bad_checkpoint(tmp_path: Path) -> Path:
    path = tmp_path / "notes.pt"
    path.write_text("not a checkpoint\n")
    return path


# ---------------------------------------------------------------------------- help and version


def test_help_lists_the_commands() -> None:
    result = invoke("--help")
    assert result.exit_code == 0
    assert "Usage:" in result.output
    for command in ("synth", "train", "evaluate"):
        assert command in result.output


def test_version() -> None:
    result = invoke("--version")
    assert result.exit_code == 0
    assert __version__ in result.output and "convseg-deploy" in result.output


@pytest.mark.parametrize("command", sorted(main.commands))
def test_every_command_has_help(command: str) -> None:
    result = invoke(command, "--help")
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output and command in result.output
    assert (main.commands[command].help or "").split("\n")[0].strip()  # a help line, not nothing


# ---------------------------------------------------------------------------- bad usage: exit 2


@pytest.mark.parametrize("args", [
    ["no-such-command"],
    ["evaluate"],  # --checkpoint and --data are required
    ["evaluate", "--checkpoint", "x.pt", "--data", "d", "--split", "bogus"],
    ["train", "--data", "d", "--out", "o", "--epochs", "many"],
    ["synth"],
])
def test_bad_usage_exits_2(args: list[str]) -> None:
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    assert "Usage:" in result.output and "Traceback" not in result.output


# ---------------------------------------------------------------------------- user errors: exit 1


def test_evaluate_on_a_missing_dataset(trained_checkpoint: Path, tmp_path: Path) -> None:
    absent = tmp_path / "no-such-dataset"
    result = invoke("evaluate", "--checkpoint", trained_checkpoint, "--data", absent, "--device", "cpu")
    assert_user_error(result, str(absent))


def test_evaluate_with_a_bad_checkpoint(bad_checkpoint: Path, synth_data: Path) -> None:
    result = invoke("evaluate", "--checkpoint", bad_checkpoint, "--data", synth_data, "--device", "cpu")
    assert_user_error(result, str(bad_checkpoint))


def test_train_with_an_image_size_that_is_not_a_multiple_of_16(synth_data: Path, tmp_path: Path) -> None:
    result = invoke("train", "--data", synth_data, "--out", tmp_path / "run", "--image-size", "70",
                    "--encoder", "resnet18", "--device", "cpu", "--no-progress")
    line = assert_user_error(result, "70x70", "16")
    assert "64" in line and "80" in line  # the sizes that would work
    assert not (tmp_path / "run" / "best.pt").exists()


def test_train_on_a_missing_dataset(tmp_path: Path) -> None:
    absent = tmp_path / "absent"
    result = invoke("train", "--data", absent, "--out", tmp_path / "run", "--device", "cpu", "--no-progress")
    assert_user_error(result, str(absent))


def test_train_with_an_unknown_encoder(synth_data: Path, tmp_path: Path) -> None:
    result = invoke("train", "--data", synth_data, "--out", tmp_path / "run", "--encoder", "resnet_nonexistent",
                    "--image-size", "64", "--device", "cpu", "--no-progress")
    assert_user_error(result, "resnet_nonexistent")


def test_train_with_a_broken_yaml_config(synth_data: Path, tmp_path: Path) -> None:
    config = tmp_path / "broken.yaml"
    config.write_text("epochs: [1, 2\nlr: 0.1\n")
    result = invoke("train", "--data", synth_data, "--out", tmp_path / "run", "--config", config)
    assert_user_error(result, str(config))


def test_train_with_an_unknown_config_key(synth_data: Path, tmp_path: Path) -> None:
    config = tmp_path / "typo.yaml"
    config.write_text("epochz: 3\nlr: 0.001\n")
    result = invoke("train", "--data", synth_data, "--out", tmp_path / "run", "--config", config)
    assert_user_error(result, str(config), "epochz")


def test_train_with_a_config_that_is_not_a_mapping(synth_data: Path, tmp_path: Path) -> None:
    config = tmp_path / "list.yaml"
    config.write_text("- epochs\n- 3\n")
    result = invoke("train", "--data", synth_data, "--out", tmp_path / "run", "--config", config)
    assert_user_error(result, str(config))


def test_synth_with_a_bad_size(tmp_path: Path) -> None:
    result = invoke("synth", tmp_path / "data", "--count", "2", "--size", "70")
    assert_user_error(result, "70")
    assert not (tmp_path / "data").exists()


def test_debug_lets_the_exception_through(bad_checkpoint: Path, synth_data: Path) -> None:
    result = invoke("--debug", "evaluate", "--checkpoint", bad_checkpoint, "--data", synth_data, "--device", "cpu")
    assert result.exit_code == 1
    assert isinstance(result.exception, ConvSegError)
    assert result.exc_info is not None and result.exc_info[2] is not None


def _run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "convseg_deploy.cli", *map(str, args)], cwd=REPO,
                          check=False, capture_output=True, text=True, timeout=120)


def test_real_process_prints_one_line_or_the_traceback_with_debug(tmp_path: Path) -> None:
    absent = tmp_path / "absent"
    plain = _run_cli("evaluate", "--checkpoint", tmp_path / "x.pt", "--data", absent)
    assert plain.returncode == 1
    assert plain.stderr.strip().splitlines() == [plain.stderr.strip()]
    assert plain.stderr.startswith("Error: ") and str(absent) in plain.stderr
    assert "Traceback" not in plain.stderr + plain.stdout

    debug = _run_cli("--debug", "evaluate", "--checkpoint", tmp_path / "x.pt", "--data", absent)
    assert debug.returncode == 1
    assert "Traceback (most recent call last)" in debug.stderr
    assert "ConvSegError" in debug.stderr and str(absent) in debug.stderr


# ---------------------------------------------------------------------------- commands that work


def test_synth_writes_a_dataset(tmp_path: Path) -> None:
    out = tmp_path / "synthetic"
    result = invoke("synth", out, "--count", "3", "--size", "64", "--seed", "1")
    assert result.exit_code == 0, result.output
    assert str(out) in result.output
    samples = find_samples(out)
    assert len(samples) == 3 and all(s.mask is not None for s in samples)
    assert read_image(samples[0].image).shape == (64, 64, 3)


def test_evaluate_writes_json_metrics(trained_checkpoint: Path, synth_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "metrics.json"
    result = invoke("evaluate", "--checkpoint", trained_checkpoint, "--data", synth_data, "--split", "all",
                    "--device", "cpu", "--json", out)
    assert result.exit_code == 0, result.output
    metrics = json.loads(out.read_text())
    assert set(metrics) == METRIC_KEYS
    assert metrics["images"] == 80
    for key in METRIC_KEYS - {"images"}:
        assert 0.0 <= metrics[key] <= 1.0
        assert f"{metrics[key]:.4f}" in result.output  # the printed table shows the same numbers
    assert not list(tmp_path.glob(".metrics.json.*"))  # written atomically, no temp file left


def test_evaluate_agrees_with_the_validation_scores_of_training(trained_checkpoint: Path, synth_data: Path,
                                                                tmp_path: Path) -> None:
    out = tmp_path / "val.json"
    # trained_run trains with seed 0, so its validation split is the seed-0 val split
    result = invoke("evaluate", "--checkpoint", trained_checkpoint, "--data", synth_data, "--split", "val",
                    "--seed", "0", "--device", "cpu", "--json", out)
    assert result.exit_code == 0, result.output
    metrics = json.loads(out.read_text())
    logged = torch.load(trained_checkpoint, weights_only=True)["metrics"]
    assert metrics["images"] == logged["images"] == 8
    for key in METRIC_KEYS - {"images"}:
        assert metrics[key] == pytest.approx(logged[key], abs=1e-6)


def test_help_quotes_the_defaults_it_names_from_their_constants() -> None:
    from convseg_deploy.config import MAX_PIXELS, TrainConfig

    def text(*args: str) -> str:
        return " ".join(CliRunner().invoke(main, [*args, "--help"], terminal_width=400).output.split())

    train, defaults = text("train"), TrainConfig()
    for phrase in (f"timm encoder name [{defaults.encoder}]", f"[{defaults.decoder_channels}, as in the paper]",
                   f"[{defaults.image_size[0]}]", f"Maximum epochs [{defaults.epochs}]", f"[{defaults.batch_size}]",
                   f"Adam learning rate [{defaults.lr:g}]", f"[{defaults.seed}]"):
        assert phrase in train, phrase
    assert f"to decode [{MAX_PIXELS}]" in text("predict")


def test_one_csv_parser_for_every_command() -> None:
    from convseg_deploy.benchmarks import command as bench_command
    from convseg_deploy.cli_values import csv_list
    from convseg_deploy.exporters import commands as export_commands

    assert csv_list(" a, b,,c ") == ["a", "b", "c"] and csv_list(None) == csv_list("") == []
    assert export_commands.csv_list is bench_command.csv_list is csv_list
    for module in (bench_command, export_commands, __import__("convseg_deploy.cli").cli):
        assert not hasattr(module, "_csv"), module.__name__
