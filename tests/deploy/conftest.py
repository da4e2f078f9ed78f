"""Fixtures of the deploy tests: exported ONNX artifacts of the tiny trained model, and a bundle.

``artifacts`` uses ``exporters.pipeline.export_artifacts`` when the pipeline exists; until then
it exports the checkpoint itself (fp32 only) and writes a manifest in the pipeline's format.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from convseg_deploy.fsutil import sha256_file, write_json


def _export_fp32(checkpoint: Path, out: Path) -> None:
    """torch.onnx.export of the checkpoint (dynamic batch) plus a pipeline-style manifest."""
    import onnx
    import torch

    from convseg_deploy.checkpoint import load_model
    from exporters.metadata import set_metadata

    model = load_model(checkpoint).eval()
    h, w = model.preprocess.size
    path = out / "model.fp32.onnx"
    torch.onnx.export(model, (torch.zeros(1, 3, h, w),), str(path), input_names=["image"], output_names=["logits"],
                      dynamic_axes={"image": {0: "N"}, "logits": {0: "N"}}, opset_version=17, dynamo=False)
    proto = onnx.load(str(path))
    set_metadata(proto, {"preprocess": model.preprocess.to_dict(), "threshold": model.threshold, "precision": "fp32"})
    onnx.save(proto, str(path))
    write_json(out / "manifest.json", {
        "format": "convseg-deploy/manifest/v1",
        "preprocess": model.preprocess.to_dict(),
        "threshold": model.threshold,
        "model": model.config.to_dict() if hasattr(model, "config") else {},
        "artifacts": [{
            "file": path.name, "sha256": sha256_file(path), "size_bytes": path.stat().st_size,
            "precision": "fp32", "input_shapes": {"image": ["N", 3, h, w]}, "opset": 17, "verification": {},
        }],
    })


@pytest.fixture(scope="session")
def artifacts(trained_checkpoint: Path, synth_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An export folder: model.fp32.onnx (+ model.int8-cpu.onnx with the pipeline) and manifest.json."""
    out = tmp_path_factory.mktemp("artifacts")
    try:
        from exporters.pipeline import export_artifacts
    except ImportError:
        _export_fp32(trained_checkpoint, out)
    else:
        # min_agreement 0: these tests check deployment, not how well a 4-epoch model quantizes
        export_artifacts(trained_checkpoint, out, precisions=("fp32", "int8-cpu"), calib_data=synth_data,
                         calib_count=16, verify_count=4, min_agreement=0.0, log=lambda _msg: None)
    return out


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
