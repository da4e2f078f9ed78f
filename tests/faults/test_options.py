"""Every bad option a one-line error, before any work: training values, resume, --engine, --out, threads."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from convseg_deploy.config import TrainConfig
from convseg_deploy.errors import ConvSegError
from tests.faults.helpers import cli, error_line


def test_train_decoder_channels_zero(synth_data: Path, tmp_path: Path) -> None:
    result = cli("train", "--data", synth_data, "--out", tmp_path / "run", "--decoder-channels", "0")
    assert result.exit_code == 1
    assert "training option decoder_channels must be at least 1, got 0" in error_line(result.output)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("yaml_text, message", [
    ("batch_size: eight\n", "batch_size must be an integer, got 'eight'"),
    ("lr: fast\n", "lr must be a number, got 'fast'"),
    ("augment: 3\n", "augment must be true or false, got 3"),
    ("image_size: [64]\n", "image_size must be one integer or two"),
    ("epochs: 2.5\n", "epochs must be an integer, got 2.5"),
])
def test_yaml_values_of_the_wrong_type(synth_data: Path, tmp_path: Path, yaml_text: str, message: str) -> None:
    config = tmp_path / "train.yaml"
    config.write_text(yaml_text)
    result = cli("train", "--data", synth_data, "--out", tmp_path / "run", "--config", config)
    assert result.exit_code == 1 and message in error_line(result.output)
    assert not (tmp_path / "run").exists()


def test_train_config_accepts_an_integer_lr_and_rejects_bools_for_integers() -> None:
    assert TrainConfig(lr=1).lr == 1.0
    with pytest.raises(ConvSegError, match="batch_size must be an integer, got True"):
        TrainConfig(batch_size=True)


def test_resuming_a_finished_run_says_so_and_changes_nothing(trained_run: Path, synth_data: Path, tmp_path: Path) -> None:
    run = Path(shutil.copytree(trained_run, tmp_path / "run"))
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    result = cli("train", "--data", synth_data, "--out", run, "--resume", run / "last.pt", "--encoder", "resnet18",
                 "--decoder-channels", "16", "--image-size", "64", "--epochs", "5", "--device", "cpu", "--no-progress")
    assert result.exit_code == 1
    assert "is a finished run: it reached --epochs 5 at epoch 5; nothing was changed" in error_line(result.output)
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before  # config.json too


def test_export_threads_must_be_positive(trained_checkpoint: Path, tmp_path: Path) -> None:
    result = cli("export", "--checkpoint", trained_checkpoint, "--out", tmp_path / "o", "--threads", "0")
    assert result.exit_code == 2 and "Invalid value for '--threads'" in result.output
    assert not (tmp_path / "o").exists()


def test_runners_refuse_zero_threads(artifacts: Path) -> None:
    from convseg_deploy.runtime.onnxruntime_runner import OnnxRuntimeRunner

    with pytest.raises(ConvSegError, match="thread count must be at least 1, got 0"):
        OnnxRuntimeRunner(artifacts / "model.fp32.onnx", threads=0).activate()


def test_bench_checks_out_before_benchmarking(artifacts: Path, synth_data: Path, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from convseg_deploy.benchmarks import harness

    def never(*_args: object) -> None:
        raise AssertionError("bench ran although --out cannot be written")

    monkeypatch.setattr(harness, "run_rows", never)
    blocked = tmp_path / "file"
    blocked.write_text("a file, not a folder")
    result = cli("bench", "--artifacts", artifacts, "--data", synth_data, "--out", blocked / "report", "--no-progress")
    assert result.exit_code == 1 and "cannot create output folder" in error_line(result.output)
