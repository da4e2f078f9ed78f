"""Frames-in/masks-out ONNX variants: the preprocessing and threshold as graph nodes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from convseg_deploy.errors import ConvSegError
from convseg_deploy.imaging import logits_to_masks, preprocess, sigmoid
from convseg_deploy.metrics import mean_dice
from exporters.frames_io import (
    FRAMES_INPUT,
    MASK_OUTPUT,
    PROBABILITY_OUTPUT,
    frames_name,
    run_frames_model,
    wrap_frames,
)


def _frames(synth_data: Path, count: int = 8) -> np.ndarray:
    from convseg_deploy.data import find_samples, load_samples

    images, _ = load_samples(find_samples(synth_data)[:count], (64, 64))
    return images


def _tensor_run(path: Path, frames: np.ndarray, spec: object) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"image": preprocess(frames, spec)})[0]


@pytest.fixture(scope="module")
def frames_export(trained_checkpoint: Path, synth_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """fp32 and fp16 exported with --io tensor,frames (no calibration needed: fast)."""
    from exporters.pipeline import export_artifacts

    out = tmp_path_factory.mktemp("frames-export")
    export_artifacts(trained_checkpoint, out, ("fp32", "fp16"), calib_data=synth_data, verify_count=8,
                     io=("tensor", "frames"), log=lambda _msg: None)
    return out


def test_export_io_frames_writes_checked_variants(frames_export: Path, synth_data: Path) -> None:
    import onnx

    manifest = json.loads((frames_export / "manifest.json").read_text())
    assert [a["file"] for a in manifest["artifacts"]] == ["model.fp32.onnx", "model.fp16.onnx"]
    variants = {a["precision"]: a for a in manifest["frames_artifacts"]}
    assert set(variants) == {"fp32", "fp16"} and variants["fp32"]["file"] == frames_name("fp32")
    assert variants["fp32"]["verification"]["agreement_vs_fp32"] >= 0.999  # the bar for fp32
    assert variants["fp32"]["verification"]["threshold"] == 0.999
    assert variants["fp16"]["verification"]["agreement_vs_fp32"] >= 0.99
    model = onnx.load(str(frames_export / variants["fp32"]["file"]))
    (inp,) = model.graph.input
    assert inp.name == FRAMES_INPUT and inp.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert [d.dim_value for d in inp.type.tensor_type.shape.dim][1:] == [64, 64, 3]
    assert [o.name for o in model.graph.output] == [MASK_OUTPUT, PROBABILITY_OUTPUT]
    # Independently of the export's own check: masks and probabilities against the tensor model.
    frames = _frames(synth_data)
    from convseg_deploy.artifacts.onnx_meta import preprocess_from_metadata, read_metadata

    spec, threshold = preprocess_from_metadata(read_metadata(frames_export / "model.fp32.onnx"))
    logits = _tensor_run(frames_export / "model.fp32.onnx", frames, spec)
    import onnxruntime as ort

    mask, prob = ort.InferenceSession(str(frames_export / "frames.fp32.onnx")).run(None, {FRAMES_INPUT: frames})
    assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 255}
    np.testing.assert_allclose(prob, sigmoid(logits)[:, 0], atol=1e-5)
    assert mean_dice(mask == 255, logits_to_masks(logits, threshold)) >= 0.999


def test_export_io_frames_only_leaves_out_tensor_models(trained_checkpoint: Path, tmp_path: Path) -> None:
    from exporters.pipeline import export_artifacts

    manifest = export_artifacts(trained_checkpoint, tmp_path, ("fp32",), verify_count=4, io=("frames",), log=lambda _m: None)
    assert manifest["artifacts"] == [] and [a["file"] for a in manifest["frames_artifacts"]] == ["frames.fp32.onnx"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frames.fp32.onnx", "manifest.json"]
    with pytest.raises(ConvSegError, match="--io nchw"):
        export_artifacts(trained_checkpoint, tmp_path / "x", ("fp32",), io=("nchw",), log=lambda _m: None)


def test_wrap_follows_bgr_order_mean_and_std_from_metadata(frames_export: Path, synth_data: Path, tmp_path: Path) -> None:
    """A model whose metadata asks for BGR, another mean/std and scale: the graph must do the same."""
    import onnx

    from convseg_deploy.config import PreprocessSpec
    from convseg_deploy.artifacts.onnx_meta import get_metadata, set_metadata

    model = onnx.load(str(frames_export / "model.fp32.onnx"))
    meta = get_metadata(model)
    spec = PreprocessSpec((64, 64), "BGR", 1 / 127.5, (0.5, 0.25, 0.75), (0.5, 2.0, 0.25))
    set_metadata(model, {**meta, "preprocess": spec.to_dict(), "threshold": 0.3})
    src = tmp_path / "model.fp32.onnx"
    onnx.save(model, str(src))
    wrap_frames(src, tmp_path / "frames.onnx", probability=False)
    frames = _frames(synth_data, 4)
    logits = _tensor_run(src, frames, spec)
    import onnxruntime as ort

    session = ort.InferenceSession(str(tmp_path / "frames.onnx"))
    assert [o.name for o in session.get_outputs()] == [MASK_OUTPUT]
    (mask,) = session.run(None, {FRAMES_INPUT: frames})
    assert mean_dice(mask == 255, logits_to_masks(logits, 0.3)) >= 0.999
    assert mean_dice(run_frames_model(tmp_path / "frames.onnx", frames), logits_to_masks(logits, 0.3)) >= 0.999
    # The RGB model's masks differ on the same frames: the channel order really was applied.
    rgb_logits = _tensor_run(src, frames, PreprocessSpec((64, 64)))
    assert not np.allclose(sigmoid(rgb_logits), sigmoid(logits), atol=1e-3)


def test_wrap_refuses_a_wrapped_model(frames_export: Path, tmp_path: Path) -> None:
    with pytest.raises(ConvSegError, match="already takes frames"):
        wrap_frames(frames_export / "frames.fp32.onnx", tmp_path / "twice.onnx")
    assert not (tmp_path / "twice.onnx").exists()
