"""Session-scoped fixtures shared by the whole suite: small synthetic data and a trained model.

Everything is 64x64 and tiny (resnet18 encoder, 16 decoder channels) so the suite runs on two
CPU cores in minutes; the same code paths serve the full-size model.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# The stdlib's distutils for setuptools: ModelOpt's torch side imports torch.utils.cpp_extension,
# which imports setuptools, whose own-distutils override asserted, on the first `make test` of a
# fresh clone only, that `distutils` was its copy (AssertionError .../lib/python3.11/distutils/core.py)
# and stopped the collection. With "stdlib" the override is off; Python 3.11 still has distutils.
# make test sets it before the interpreter starts; this covers a plain pytest run.
os.environ.setdefault("SETUPTOOLS_USE_DISTUTILS", "stdlib")

from tests.fakes import FLAVOURS
from tests.required import ENV, check_required

TINY_SIZE = 64


def pytest_sessionstart(session: pytest.Session) -> None:
    problems = check_required()
    if problems:
        raise pytest.UsageError(f"{ENV} names parts this machine lacks ({'; '.join(problems)}): "
                                "run `make test`, which installs them")


@pytest.fixture(params=FLAVOURS)
def flavour(request: pytest.FixtureRequest) -> str:
    """The TensorRT version a test double imitates: one 10.x (JetPack) and one 11.x flavour."""
    return request.param


@pytest.fixture(scope="session")
def synth_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Kvasir-SEG-layout synthetic dataset: 80 frames of 64x64 (split 64/8/8 by the seeded split)."""
    from convseg_deploy.synth import generate_dataset

    return generate_dataset(tmp_path_factory.mktemp("data") / "synth", count=80, size=TINY_SIZE, seed=3)


@pytest.fixture(scope="session")
def trained_run(synth_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder (best.pt, last.pt, log.jsonl) of a short training on ``synth_data``."""
    from convseg_deploy.config import TrainConfig
    from convseg_deploy.train import train

    out = tmp_path_factory.mktemp("run")
    cfg = TrainConfig(encoder="resnet18", decoder_channels=16, image_size=(TINY_SIZE, TINY_SIZE), epochs=5,
                      batch_size=8, lr=1e-3, device="cpu", seed=0)
    train(cfg, synth_data, out, progress=False, log=lambda _msg: None)
    return out


@pytest.fixture(scope="session")
def trained_checkpoint(trained_run: Path) -> Path:
    return trained_run / "best.pt"


@pytest.fixture(scope="session")
def exported(trained_checkpoint: Path, synth_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An export folder of the tiny trained model: model.fp32.onnx, model.int8-cpu.onnx, manifest.json.

    ``min_agreement`` 0: the consumers (bench, deploy) test their own behaviour, not how well a
    few-epoch model quantizes; tests/exporters checks the thresholds.
    """
    from convseg_deploy.exporters.pipeline import export_artifacts

    out = tmp_path_factory.mktemp("exported")
    export_artifacts(trained_checkpoint, out, ("fp32", "int8-cpu"), calib_data=synth_data, calib_count=16,
                     verify_count=8, min_agreement=0.0, max_dice_drop=None, log=lambda _msg: None)
    return out


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
    import shutil

    return Path(shutil.copytree(bundle_dir, tmp_path / "bundle"))


@pytest.fixture(scope="session")
def framework_export(trained_checkpoint: Path, synth_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """fp32, fp16 and int8 (Q/DQ) of the tiny model with every I/O variant: model.<p>.onnx and
    frames/holoscan/deepstream.<p>.onnx (``min_agreement`` 0 as for ``exported``; the fp32
    variants still have to reach 0.999, which the export enforces whatever the option)."""
    from convseg_deploy.exporters.pipeline import export_artifacts

    out = tmp_path_factory.mktemp("framework-export")
    export_artifacts(trained_checkpoint, out, ("fp32", "fp16", "int8"), calib_data=synth_data, calib_count=16,
                     verify_count=8, min_agreement=0.0, max_dice_drop=None, io=("tensor", "frames", "holoscan", "deepstream"),
                     log=lambda _msg: None)
    return out


@pytest.fixture(scope="session")
def framework_bundle(framework_export: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bundle of ``framework_export`` (read-only for tests: copy it before changing it)."""
    from convseg_deploy.deploy.bundle import make_bundle

    out = tmp_path_factory.mktemp("framework-bundles") / "bundle"
    make_bundle(framework_export, out, log=lambda _msg: None)
    return out


@pytest.fixture(scope="session", autouse=True)
def _peak_probe_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """The peak probe (doctor, bench) caches in a folder of the session, never in ~/.cache, and
    times each kernel for a moment: the tests check that it measures, not how fast."""
    import os

    from convseg_deploy.hardware.peak import CACHE_ENV, SECONDS_ENV

    os.environ[CACHE_ENV] = str(tmp_path_factory.mktemp("peak-cache"))
    os.environ[SECONDS_ENV] = "0.05"
