"""Fixtures of the deploy tests: exported ONNX artifacts of the tiny trained model, and a bundle."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from convseg_deploy.deploy.select import openvino_preferred

# What `predict --backend auto` uses for ONNX files on this CPU: OpenVINO on Intel CPUs where it is
# installed, else ONNX Runtime's CPU provider.
CPU_RUNTIME = ("openvino", "cpu") if openvino_preferred() else ("onnxruntime", "cpu")
CPU_LABEL = "OpenVINO (CPU)" if openvino_preferred() else "ONNX Runtime (CPU)"

@pytest.fixture(scope="session")
def artifacts(exported: Path) -> Path:
    """The session's export folder: model.fp32.onnx, model.int8-cpu.onnx and manifest.json."""
    return exported


@pytest.fixture(scope="session")
def bundle_dir(artifacts: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bundle of every model in ``artifacts`` (read-only for tests: copy it before tampering)."""
    from convseg_deploy.deploy.bundle import make_bundle

    out = tmp_path_factory.mktemp("bundles") / "bundle"
    make_bundle(artifacts, out)
    return out


@pytest.fixture
def bundle_copy(bundle_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the bundle that a test may damage."""
    return Path(shutil.copytree(bundle_dir, tmp_path / "bundle"))
