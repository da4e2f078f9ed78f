"""The harness over fake runners: statuses, one-line reasons, accuracy and end-to-end numbers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from convseg_deploy.benchmarks import harness
from convseg_deploy.benchmarks.harness import Settings, e2e_fps, load_dataset, one_line, run_rows
from convseg_deploy.benchmarks.row import Row
from convseg_deploy.errors import ConvSegError, MissingDependencyError
from tests.benchmarks.conftest import RecordingRunner

SETTINGS = Settings(warmup=1, iters=3, threads=1, progress=False)


def rows_for(path: Path, *batches: int, provider: str = "cpu") -> list[Row]:
    return [Row("onnxruntime", provider, "fp32", path, b) for b in batches]


@pytest.fixture
def fake_runners(monkeypatch: pytest.MonkeyPatch) -> dict[str, RecordingRunner]:
    """make_runner returns the runner registered under the artifact's file name."""
    registry: dict[str, RecordingRunner] = {}
    monkeypatch.setattr(harness, "make_runner", lambda path, *a, **k: registry[Path(path).name])
    return registry


def test_rows_ok_with_speed_and_accuracy(synth_data: Path, fake_runners: dict[str, Any]) -> None:
    fake_runners["a.onnx"] = runner = RecordingRunner(precision="int8")
    out = run_rows(rows_for(Path("a.onnx"), 1, 4), load_dataset(synth_data, max_images=6), SETTINGS)
    assert [r["status"] for r in out.results] == ["ok", "ok"]
    first = out.results[0]
    assert first["precision"] == "int8"  # from the runner's own metadata, not the plan's guess
    assert first["iters"] == 3 and set(first["latency_ms"]) == {"mean", "p50", "p90", "p95", "p99", "min", "max"}
    assert first["fps"] == pytest.approx(1e3 / first["latency_ms"]["mean"])
    assert first["e2e_fps"] > 0 and 0.0 <= first["dice"] <= 1.0 and first["iou"] <= first["dice"]
    assert out.masks[first["runner_key"]].shape == (6, 64, 64)
    assert runner.log[0] == "activate" and runner.log[-1] == "deactivate" and runner.log.count("activate") == 1


def test_one_failing_batch_fails_only_its_row(synth_data: Path, fake_runners: dict[str, Any]) -> None:
    fake_runners["e.engine"] = RecordingRunner(fail_batch=8)
    out = run_rows(rows_for(Path("e.engine"), 1, 8), load_dataset(synth_data, max_images=4), SETTINGS)
    ok, failed = out.results
    assert ok["status"] == "ok" and failed["status"] == "failed"
    assert failed["reason"] == "batch 8 exceeds the engine's profile (max 7)" and failed["fps"] is None


def test_missing_dependency_skips_and_other_errors_fail(synth_data: Path, fake_runners: dict[str, Any]) -> None:
    fake_runners["gpu.onnx"] = RecordingRunner(activate_error=MissingDependencyError("no TensorRT here"))
    fake_runners["bad.onnx"] = RecordingRunner(activate_error=RuntimeError("boom\nsecond line\nthird"))
    fake_runners["good.onnx"] = RecordingRunner()
    rows = [*rows_for(Path("gpu.onnx"), 1, 8), *rows_for(Path("bad.onnx"), 1), *rows_for(Path("good.onnx"), 1)]
    out = run_rows(rows, load_dataset(synth_data, max_images=4), SETTINGS)
    assert [(r["status"], r["reason"]) for r in out.results] == [
        ("skipped", "no TensorRT here"), ("skipped", "no TensorRT here"), ("failed", "RuntimeError: boom second line third"), ("ok", None)]


def test_placeholder_row_is_skipped_with_its_note(synth_data: Path) -> None:
    out = run_rows([Row("tensorrt", "-", "-", None, 1, note="no .engine among --artifacts")],
                   load_dataset(synth_data, max_images=2), SETTINGS)
    assert out.results[0]["status"] == "skipped" and out.results[0]["reason"] == "no .engine among --artifacts"


def test_images_without_masks_give_speed_only(images_only: Path, fake_runners: dict[str, Any]) -> None:
    fake_runners["a.onnx"] = RecordingRunner()
    dataset = load_dataset(images_only)
    assert dataset.no_accuracy and "no ground-truth masks" in dataset.no_accuracy
    (result,) = run_rows(rows_for(Path("a.onnx"), 2), dataset, SETTINGS).results
    assert result["status"] == "ok" and result["dice"] is None and result["accuracy_reason"] == dataset.no_accuracy
    assert result["fps"] > 0


def test_e2e_reads_every_file_and_synchronizes(synth_data: Path) -> None:
    log: list[str] = []
    paths = sorted((synth_data / "images").iterdir())[:5]
    assert e2e_fps(RecordingRunner(log), paths, 2) > 0
    assert log.count("infer") == 3 and log[0] == "sync" and log[-1] == "sync"


def test_one_line_reasons() -> None:
    assert one_line(ConvSegError("first\nsecond")) == "first second"  # the cause may be on a later line
    assert one_line(ValueError()) == "ValueError"
    long = one_line(RuntimeError("x" * 1000 + " the cause"))
    assert len(long) <= harness.MAX_REASON and long.endswith("the cause") and " ... " in long  # the middle goes


def test_empty_dataset_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(ConvSegError):
        load_dataset(tmp_path)


def test_not_installed_skips_but_installed_and_broken_fails(synth_data: Path, fake_runners: dict[str, Any]) -> None:
    fake_runners["absent.onnx"] = RecordingRunner(activate_error=ModuleNotFoundError("No module named 'tensorrt'"))
    fake_runners["broken.engine"] = RecordingRunner(
        activate_error=ConvSegError("TensorRT is installed but does not load (libnvinfer.so.10: cannot open)"))
    rows = [*rows_for(Path("absent.onnx"), 1), *rows_for(Path("broken.engine"), 1)]
    out = run_rows(rows, load_dataset(synth_data, max_images=2), SETTINGS)
    assert [r["status"] for r in out.results] == ["skipped", "failed"]
    assert out.results[1]["reason"].startswith("TensorRT is installed but does not load")


@pytest.mark.parametrize(("driver", "status"), [(False, "skipped"), (True, "failed")])
def test_gpu_rows_without_a_gpu_skip_only_where_no_driver_is_installed(
        synth_data: Path, fake_runners: dict[str, Any], monkeypatch: pytest.MonkeyPatch, driver: bool, status: str) -> None:
    from convseg_deploy.hardware import gpu as device

    monkeypatch.setattr(device, "list_gpus", lambda: [])
    monkeypatch.setattr(device, "gpu_expected", lambda: driver)
    fake_runners["a.onnx"] = RecordingRunner()
    out = run_rows(rows_for(Path("a.onnx"), 1, provider="cuda"), load_dataset(synth_data, max_images=2), SETTINGS)
    (row,) = out.results
    assert row["status"] == status
    assert ("NVIDIA driver is installed but no CUDA GPU answers" in row["reason"]) is driver


class GpuLikeRunner(RecordingRunner):
    """Reports device time and a peak-memory window, as the CUDA runners do."""

    def __init__(self) -> None:
        super().__init__()
        self.peak = 0.0

    def infer(self, batch: np.ndarray) -> np.ndarray:
        self.peak = max(self.peak, 10.0 * batch.shape[0])
        return super().infer(batch)

    def reset_peak_memory(self) -> None:
        self.log.append("reset_peak")
        self.peak = 0.0

    def peak_memory_mb(self) -> float | None:
        return self.peak

    def device_time_ms(self) -> float | None:
        return 2.0 if self.peak else None


def test_peak_memory_is_per_row_and_device_time_is_reported(synth_data: Path, fake_runners: dict[str, Any]) -> None:
    fake_runners["g.onnx"] = runner = GpuLikeRunner()
    out = run_rows(rows_for(Path("g.onnx"), 4, 1), load_dataset(synth_data, max_images=4), SETTINGS)
    big, small = out.results
    assert runner.log.count("reset_peak") == 2
    assert big["peak_memory_mb"] == 40.0 and small["peak_memory_mb"] == 10.0  # not the batch-4 row's peak again
    assert big["device_ms"]["p50"] == pytest.approx(2.0) and big["device_ms"]["p99"] is None
