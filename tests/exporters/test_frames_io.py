"""Frames-in/masks-out ONNX variants: the preprocessing and threshold as graph nodes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from convseg_deploy.errors import ConvSegError
from convseg_deploy.imaging import logits_to_masks, preprocess, sigmoid
from convseg_deploy.metrics import mean_dice
from convseg_deploy.artifacts.io_variants import FRAMES_INPUT, MASK_OUTPUT, PROBABILITY_OUTPUT
from convseg_deploy.ort_session import run_variant
from convseg_deploy.exporters.frames_io import frames_name, wrap_frames


def _frames(synth_data: Path, count: int = 8) -> np.ndarray:
    from convseg_deploy.data import find_samples, load_samples

    images, _ = load_samples(find_samples(synth_data)[:count], (64, 64))
    return images


def _tensor_run(path: Path, frames: np.ndarray, spec: object) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"image": preprocess(frames, spec)})[0]


@pytest.fixture(scope="module")
def frames_export(framework_export: Path) -> Path:
    """fp32, fp16 and int8 exported with --io tensor,frames,holoscan,deepstream (the session's)."""
    return framework_export


def test_export_io_frames_writes_checked_variants(frames_export: Path, synth_data: Path) -> None:
    import onnx

    manifest = json.loads((frames_export / "manifest.json").read_text())
    assert [a["file"] for a in manifest["artifacts"]] == ["model.fp32.onnx", "model.fp16.onnx", "model.int8.onnx"]
    variants = {(a["io"], a["precision"]): a for a in manifest["frames_artifacts"]}
    assert set(variants) == {(io, p) for io in ("frames", "holoscan", "deepstream") for p in ("fp32", "fp16", "int8")}
    assert variants["frames", "fp32"]["file"] == frames_name("fp32")
    for io in ("frames", "holoscan", "deepstream"):
        assert variants[io, "fp32"]["verification"]["agreement_vs_fp32"] >= 0.999  # the bar for fp32
        assert variants[io, "fp32"]["verification"]["threshold"] == 0.999
    model = onnx.load(str(frames_export / variants["frames", "fp32"]["file"]))
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


# What each framework hands the model, written out here from its documentation rather than taken
# from artifacts.io_variants.feed: Holoscan's FormatConverterOp (out_dtype float32, scale 0-1)
# gives interleaved H x W x 3 floats x / 255; nvinfer (net-scale-factor 1/255, offsets 0) planar
# 3 x H x W floats (1/255) * (x - 0).
HANDED_OVER = {
    "holoscan": lambda rgb: rgb.astype(np.float32) / np.float32(255.0),
    "deepstream": lambda rgb: (np.float32(1 / 255) * rgb.astype(np.float32)).transpose(0, 3, 1, 2),
}


@pytest.mark.parametrize("io", ["holoscan", "deepstream"])
def test_framework_variants_normalise_inside_and_output_the_probability_first(frames_export: Path, synth_data: Path,
                                                                             io: str) -> None:
    import onnx
    import onnxruntime as ort

    from convseg_deploy.artifacts.onnx_meta import preprocess_from_metadata, read_metadata

    frames = _frames(synth_data)
    for precision in ("fp32", "fp16", "int8"):
        path = frames_export / frames_name(precision, io)
        model = onnx.load(str(path))
        (inp,) = model.graph.input
        dims = [d.dim_value or d.dim_param for d in inp.type.tensor_type.shape.dim]
        assert inp.name == "rgb" and inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
        assert dims[1:] == ([64, 64, 3] if io == "holoscan" else [3, 64, 64])
        assert [o.name for o in model.graph.output] == [PROBABILITY_OUTPUT, "logits"]
        tensor = frames_export / f"model.{precision}.onnx"
        spec, threshold = preprocess_from_metadata(read_metadata(tensor))
        assert spec.std[0] != spec.std[1]  # ImageNet's per-channel std: what neither framework can express
        probability, logits = ort.InferenceSession(str(path)).run(None, {"rgb": HANDED_OVER[io](frames)})
        reference = _tensor_run(tensor, frames, spec)
        assert probability.shape == logits.shape == (len(frames), 1, 64, 64)
        np.testing.assert_allclose(probability, sigmoid(logits), atol=1e-6)
        # The model inside sees the input predict gives it, up to float rounding (x / 255 here, x * (1/255) in
        # predict): exact enough for fp32 and fp16; an INT8 input quantizer may round a few values one step away.
        if precision == "int8":
            assert np.mean(np.abs(logits - reference) > 1e-3) < 0.01
        else:
            np.testing.assert_allclose(logits, reference, atol=1e-4 if precision == "fp32" else 1e-2)
        assert mean_dice(probability[:, 0] > threshold, logits_to_masks(reference, threshold)) >= 0.999


def test_every_variant_builds_with_the_strict_tensorrt_double(frames_export: Path, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """TensorRT 10's parser takes UINT8 only through Cast and has no UINT8 Where: the frames variant
    selects its mask in float and casts it, and every variant's graph builds; a UINT8 Where is refused."""
    import onnx
    from onnx import TensorProto, helper

    from convseg_deploy.exporters.tensorrt_builder import build_engine
    from tests.fakes import install, make_fake_tensorrt

    install(monkeypatch, make_fake_tensorrt("10.13.0"))
    for io in ("frames", "holoscan", "deepstream"):
        for precision in ("fp16", "int8"):
            sidecar = build_engine(frames_export / frames_name(precision, io), tmp_path / f"{io}.{precision}.engine")
            assert sidecar["io"] == io and sidecar["profile"]["input"] == ("frames" if io == "frames" else "rgb")
    model = onnx.load(str(frames_export / "frames.fp32.onnx"))
    where = next(n for n in model.graph.node if n.op_type == "Where")
    cast = next(n for n in model.graph.node if n.output[0] == MASK_OUTPUT)
    for name, value in (("mask_on", 255), ("mask_off", 0)):
        init = next(t for t in model.graph.initializer if t.name == name)
        init.CopyFrom(helper.make_tensor(name, TensorProto.UINT8, [], [value]))
    model.graph.node.remove(cast)
    where.output[0] = MASK_OUTPUT
    onnx.save(model, str(tmp_path / "frames.uint8-where.onnx"))
    with pytest.raises(ConvSegError, match=r"node 'mask_values' \(op Where.*does not support type UINT8"):
        build_engine(tmp_path / "frames.uint8-where.onnx", tmp_path / "refused.engine")


def test_export_io_frames_only_leaves_out_tensor_models(trained_checkpoint: Path, tmp_path: Path) -> None:
    from convseg_deploy.exporters.pipeline import export_artifacts

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
    assert mean_dice(run_variant(tmp_path / "frames.onnx", frames), logits_to_masks(logits, 0.3)) >= 0.999
    # The RGB model's masks differ on the same frames: the channel order really was applied.
    rgb_logits = _tensor_run(src, frames, PreprocessSpec((64, 64)))
    assert not np.allclose(sigmoid(rgb_logits), sigmoid(logits), atol=1e-3)


def test_wrap_refuses_a_wrapped_model(frames_export: Path, tmp_path: Path) -> None:
    with pytest.raises(ConvSegError, match="already takes frames"):
        wrap_frames(frames_export / "frames.fp32.onnx", tmp_path / "twice.onnx")
    assert not (tmp_path / "twice.onnx").exists()
