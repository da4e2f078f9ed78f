"""Fixtures of the bench tests: exported ONNX files of the tiny trained model, and fake runners."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from convseg_deploy.config import PreprocessSpec
from convseg_deploy.errors import ConvSegError
from convseg_deploy.runtime.base import Runner, RunnerInfo

TINY = PreprocessSpec(size=(64, 64))


@pytest.fixture(scope="session")
def bench_artifacts(exported: Path) -> Path:
    """The session's export folder (manifest.json, model.fp32.onnx, model.int8-cpu.onnx)."""
    return exported


@pytest.fixture(scope="session")
def images_only(synth_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of frames without masks (speed-only bench)."""
    out = tmp_path_factory.mktemp("frames")
    for image in sorted((synth_data / "images").iterdir())[:6]:
        shutil.copy(image, out / image.name)
    return out


def fake_engine(folder: Path, precision: str = "fp16") -> Path:
    """An .engine file with a valid sidecar: enough for the runner to get as far as importing TensorRT."""
    engine = folder / f"model.{precision}.engine"
    engine.write_bytes(b"not a real engine")
    sidecar = {"tensorrt_version": "10.13.0", "cuda_version": "12.6", "cpu_arch": "aarch64", "os": "linux",
               "gpu_name": "Orin", "compute_capability": "8.7", "hardware_compat": "none", "precision": precision,
               "profile": {"input": "image", "min": [1, 3, 64, 64], "opt": [1, 3, 64, 64], "max": [8, 3, 64, 64]},
               "preprocess": TINY.to_dict(), "threshold": 0.5}
    (folder / f"{engine.name}.json").write_text(json.dumps(sidecar))
    return engine


class RecordingRunner(Runner):
    """A CPU-free runner: logits from the mean of the input, calls recorded in ``log``."""

    def __init__(self, log: list[str] | None = None, fail_batch: int | None = None, activate_error: Exception | None = None,
                 precision: str = "fp32") -> None:
        self.log = log if log is not None else []
        self.fail_batch, self.activate_error = fail_batch, activate_error
        self.preprocess, self.threshold = TINY, 0.5
        self.info = RunnerInfo("onnxruntime", "cpu", precision, "fake.onnx")

    def activate(self) -> None:
        self.log.append("activate")
        if self.activate_error is not None:
            raise self.activate_error

    def infer(self, batch: np.ndarray) -> np.ndarray:
        self.log.append("infer")
        if self.fail_batch is not None and batch.shape[0] >= self.fail_batch:
            raise ConvSegError(f"batch {batch.shape[0]} exceeds the engine's profile (max {self.fail_batch - 1})")
        return batch.mean(axis=1, keepdims=True)

    def synchronize(self) -> None:
        self.log.append("sync")

    def deactivate(self) -> None:
        self.log.append("deactivate")


@pytest.fixture
def recording_runner() -> Any:
    return RecordingRunner
