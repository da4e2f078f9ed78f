"""The TensorRT INT8 and FP16 files as TensorRT takes them: ModelOpt's Q/DQ, the default gates,
float head and stem, the accuracy-bounded search, the FP16 overflow guard, and engines built
through the TensorRT double from export's own files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import numpy_helper

from convseg_deploy.artifacts.onnx_meta import read_metadata
from convseg_deploy.cli import main
from convseg_deploy.errors import ConvSegError
from convseg_deploy.imaging import logits_to_masks
from convseg_deploy.metrics import mean_dice
from convseg_deploy.exporters.calibration import load_frames
from convseg_deploy.exporters.int8_modelopt import int32_dequantize_nodes
from convseg_deploy.exporters.onnx_export import run_onnx
from convseg_deploy.exporters.pipeline import export_artifacts
from convseg_deploy.exporters.sensitivity import conv_precisions
from convseg_deploy.exporters.tensorrt_builder import build_engine
from tests.fakes import install, make_fake_tensorrt

QUIET = {"log": lambda _msg: None}


@pytest.fixture(scope="module")
def gated(trained_checkpoint: Path, synth_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """fp32, fp16 and int8 of the tiny model under the default gates (FP16 >= 0.99, INT8 >= 0.97)
    and a Dice drop of at most 0.02 against the verification frames' masks."""
    out = tmp_path_factory.mktemp("gated")
    export_artifacts(trained_checkpoint, out, ("fp32", "fp16", "int8"), calib_data=synth_data, calib_count=16,
                     verify_count=8, max_dice_drop=0.02, **QUIET)
    return out


def _artifacts(folder: Path) -> dict[str, dict]:
    return {a["precision"]: a for a in json.loads((folder / "manifest.json").read_text())["artifacts"]}


def test_default_gates_hold_and_the_manifest_says_how(gated: Path) -> None:
    arts = _artifacts(gated)
    fp16, int8 = arts["fp16"]["verification"], arts["int8"]["verification"]
    assert fp16["threshold"] == 0.99 and fp16["agreement_vs_fp32"] >= 0.99
    assert int8["threshold"] == 0.97 and int8["agreement_vs_fp32"] >= 0.97
    for verification in (fp16, int8):
        assert verification["max_dice_drop"] == 0.02 and verification["dice_drop"] <= 0.02
    model = onnx.load(str(gated / "model.int8.onnx"))
    int8_convs, convs = conv_precisions(model)
    assert int8["int8_convs"] == len(int8_convs) and int8["convs"] == len(convs) == 41
    assert int8["int8_conv_share"] == pytest.approx(len(int8_convs) / len(convs), abs=1e-4) and int8["int8_conv_share"] >= 0.8
    assert set(int8["float_layers"]).isdisjoint(int8_convs)  # layers the search kept float are float in the file


def test_int8_is_what_tensorrt_takes(gated: Path) -> None:
    model = onnx.load(str(gated / "model.int8.onnx"))
    assert int32_dequantize_nodes(model) == []
    inits = {t.name: t for t in model.graph.initializer}
    zero_points = [numpy_helper.to_array(inits[n.input[2]]) for n in model.graph.node
                   if n.op_type in ("QuantizeLinear", "DequantizeLinear") and len(n.input) > 2 and n.input[2] in inits]
    assert zero_points and all(z.dtype == np.int8 and not z.any() for z in zero_points)  # symmetric INT8
    producers = {o: n for n in model.graph.node for o in n.output}
    weight_scales = [numpy_helper.to_array(inits[producers[n.input[1]].input[1]]) for n in model.graph.node
                     if n.op_type == "Conv" and n.input[1] in producers]
    assert weight_scales and all(s.ndim == 1 and s.size > 1 for s in weight_scales)  # per channel
    weight_dqs = [producers[n.input[1]] for n in model.graph.node if n.op_type == "Conv" and n.input[1] in producers]
    # weights are stored as INT8 and only dequantized (ModelOpt's dq_only): a file 4x smaller than float weights
    assert all(dq.op_type == "DequantizeLinear" and dq.input[0] in inits
               and numpy_helper.to_array(inits[dq.input[0]]).dtype == np.int8 for dq in weight_dqs)
    residual_adds = [n for n in model.graph.node if n.op_type == "Add" and n.input[0] in producers]
    # TensorRT's residual placement: Q/DQ on the skip input only; the conv branch feeds the Add
    # directly so TensorRT fuses the Add into that convolution
    assert residual_adds and all(sorted(producers[i].op_type for i in n.input) == ["Conv", "DequantizeLinear"]
                                 for n in residual_adds)


def test_int8_is_scored_with_reference_qdq(gated: Path, synth_data: Path) -> None:
    """The export scores the int8 (TensorRT) file with ONNX Runtime's reference Q/DQ, not its INT8
    CPU kernels: the same quantized model up to float rounding, and faster for this placement."""
    frames = load_frames(synth_data, (64, 64), calib_count=16, calib_batch=8, verify_count=8, need_calibration=True).verify
    threshold = read_metadata(gated / "model.fp32.onnx")["threshold"]
    ref = logits_to_masks(run_onnx(gated / "model.fp32.onnx", frames, None), threshold)
    spec = run_onnx(gated / "model.int8.onnx", frames, None, reference_qdq=True)
    fused = run_onnx(gated / "model.int8.onnx", frames, None)
    assert not np.allclose(spec, fused, atol=1e-4)  # float rounding tells the two runs apart on this file
    verification = _artifacts(gated)["int8"]["verification"]
    assert verification["qdq_run"] == "reference"  # the manifest says how its number was measured
    agreement = verification["agreement_vs_fp32"]
    assert agreement == pytest.approx(mean_dice(logits_to_masks(spec, threshold), ref), abs=1e-9)


def test_first_convolutions_and_head_stay_float(gated: Path) -> None:
    model = onnx.load(str(gated / "model.int8.onnx"))
    int8_convs, _ = conv_precisions(model)
    float_convs = [n.name for n in model.graph.node if n.op_type == "Conv" and ("image" in n.input or "logits" in n.output)]
    assert len(float_convs) == 3 and not set(float_convs) & set(int8_convs)  # encoder stem, image skip, head
    assert set(read_metadata(gated / "model.int8.onnx")["float_nodes"]) >= set(float_convs)


def test_reference_checkpoint_keeps_its_head_conv_float(tmp_path: Path) -> None:
    """The authors' layout ends in Conv -> ReLU: the ReLU writes the logits, the conv is still the head."""
    import torch

    from tests.reference_model import build_reference

    ckpt = tmp_path / "ConvSegNet_reference.pth"
    torch.save(build_reference(seed=0).state_dict(), ckpt)
    export_artifacts(ckpt, tmp_path / "out", ("fp32", "int8"), calib_data="synth", calib_count=2, verify_count=1,
                     min_agreement=0.0, max_dice_drop=None, image_size=(32, 32), **QUIET)
    model = onnx.load(str(tmp_path / "out" / "model.int8.onnx"))
    producers = {o: n for n in model.graph.node for o in n.output}
    relu = producers["logits"]
    head = producers[relu.input[0]]
    assert (relu.op_type, head.op_type) == ("Relu", "Conv")
    int8_convs, convs = conv_precisions(model)
    assert head.name not in int8_convs and len(int8_convs) >= 0.8 * len(convs)
    assert {relu.name, head.name} <= set(read_metadata(tmp_path / "out" / "model.int8.onnx")["float_nodes"])


def test_a_target_that_cannot_be_met_names_the_best_agreement(trained_checkpoint: Path, synth_data: Path,
                                                               tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["export", "--checkpoint", str(trained_checkpoint), "--out", str(tmp_path),
                                       "--precision", "fp32,int8", "--calib-data", str(synth_data), "--calib-count", "8",
                                       "--verify-count", "4", "--min-agreement", "1.01"])
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    # the export's progress log comes first; the failure is one line, the last
    assert result.exit_code == 1 and len(errors) == 1 and result.output.splitlines()[-1] == errors[0], result.output
    assert "Traceback" not in result.output
    assert "int8: even with" in errors[0] and "layers kept in float the best was agreement 0." in errors[0]
    assert not (tmp_path / "model.int8.onnx").exists()


def test_max_dice_drop_needs_masks(trained_checkpoint: Path, synth_data: Path, tmp_path: Path) -> None:
    images_only = tmp_path / "frames"
    (images_only / "images").mkdir(parents=True)
    for image in sorted((synth_data / "images").iterdir())[:4]:
        (images_only / "images" / image.name).write_bytes(image.read_bytes())
    with pytest.raises(ConvSegError, match="--max-dice-drop needs ground-truth masks"):
        export_artifacts(trained_checkpoint, tmp_path / "o", ("fp32", "fp16"), calib_data=images_only, verify_count=2,
                         max_dice_drop=0.01, **QUIET)


def _scale_conv_pair(model: onnx.ModelProto, factor: float) -> str:
    """Multiply a Conv -> Relu -> Conv pair by ``factor`` and 1/``factor``: the same function in
    FP32 (ReLU is positively homogeneous), but activations of ``factor`` times the size between."""
    graph = model.graph
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    inits = {t.name: t for t in graph.initializer}
    for first in graph.node:
        after = consumers.get(first.output[0], [])
        if first.op_type != "Conv" or len(after) != 1 or after[0].op_type != "Relu":
            continue
        readers = consumers.get(after[0].output[0], [])
        if len(readers) == 1 and readers[0].op_type == "Conv":
            for name, scale in [*((i, factor) for i in first.input[1:]), (readers[0].input[1], 1 / factor)]:
                array = numpy_helper.to_array(inits[name]) * np.float32(scale)
                inits[name].CopyFrom(numpy_helper.from_array(array.astype(np.float32), name))
            return after[0].output[0]
    raise AssertionError("no Conv -> Relu -> Conv pair")


def test_fp16_keeps_nodes_near_overflow_in_fp32(exported: Path, synth_data: Path, tmp_path: Path) -> None:
    from convseg_deploy.exporters.calibration import calibration_batches, load_frames
    from convseg_deploy.exporters.fp16 import convert_fp16
    from convseg_deploy.exporters.fp16_guard import FP16_LIMIT, activation_peaks, overflow_nodes
    from convseg_deploy.config import PreprocessSpec
    from convseg_deploy.runtime.onnxruntime_runner import OnnxRuntimeRunner

    model = onnx.load(str(exported / "model.fp32.onnx"))
    hot = _scale_conv_pair(model, 3e4)
    fp32 = tmp_path / "model.fp32.onnx"
    onnx.save(model, str(fp32))
    frames = load_frames(synth_data, (64, 64), calib_count=4, calib_batch=1, verify_count=4, need_calibration=True)
    batches = calibration_batches(frames.calib, PreprocessSpec(size=(64, 64)), 1)
    peaks = activation_peaks(fp32, batches, threads=1)
    assert peaks[hot] >= FP16_LIMIT and max(p for name, p in peaks.items() if name != hot and "Relu" in name) < FP16_LIMIT
    keep = overflow_nodes(model, peaks)
    assert any(n.name in keep and hot in n.output for n in model.graph.node)
    convert_fp16(fp32, tmp_path / "guarded.onnx", {"precision": "fp16"}, keep_fp32=keep)
    convert_fp16(fp32, tmp_path / "naive.onnx", {"precision": "fp16"})
    batch = np.concatenate(batches)

    def run(path: Path) -> np.ndarray:
        with OnnxRuntimeRunner(path, threads=1) as runner:
            return runner.infer(batch)

    reference, guarded, naive = run(fp32), run(tmp_path / "guarded.onnx"), run(tmp_path / "naive.onnx")
    assert np.isfinite(guarded).all() and np.abs(guarded - reference).max() < 0.05 * np.abs(reference).max()
    # ONNX Runtime's CPU provider computes FP16 convolutions in FP32 inside, so the naive file's
    # overflow shows only on FP16 hardware (TensorRT); what it stores is checked instead: the hot
    # tensor as FP16 in the naive file, and FP32 all along the kept nodes in the guarded one.
    def elem_types(path: Path) -> dict[str, int]:
        inferred = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
        return {v.name: v.type.tensor_type.elem_type for v in inferred.graph.value_info}

    assert elem_types(tmp_path / "naive.onnx")[hot] == onnx.TensorProto.FLOAT16
    guarded_model, guarded_types = onnx.load(str(tmp_path / "guarded.onnx")), elem_types(tmp_path / "guarded.onnx")
    kept_inputs = [n.input[0] for n in guarded_model.graph.node if n.name in keep]
    assert kept_inputs and all(guarded_types.get(name) == onnx.TensorProto.FLOAT for name in kept_inputs)
    assert np.isfinite(naive).all()  # the same values on this CPU: the difference is only in the file
    assert read_metadata(tmp_path / "guarded.onnx")["float_nodes"] == keep


def test_engines_build_from_exports_own_fp16_and_int8_files(flavour: str, gated: Path, exported: Path,
                                                            monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    trt = make_fake_tensorrt(flavour)
    install(monkeypatch, trt)
    for precision in ("fp16", "int8"):
        sidecar = build_engine(gated / f"model.{precision}.onnx", tmp_path / f"{precision}.engine")
        assert sidecar["precision"] == precision and (tmp_path / f"{precision}.engine").is_file()
    # the CPU flavour has UINT8 activations and INT32 biases: TensorRT's parser refuses it at its
    # first such Q/DQ node (which one comes first depends on ONNX Runtime's node order)
    with pytest.raises(ConvSegError, match=r"TensorRT cannot parse .*model\.int8-cpu\.onnx: node '[^']+' "
                                           r"\(op (Quantize|Dequantize)Linear, #\d+\): .*got (UINT8|INT32)"):
        build_engine(exported / "model.int8-cpu.onnx", tmp_path / "cpu.engine")
    assert not (tmp_path / "cpu.engine").exists()



@pytest.mark.gpu
def test_real_engines_of_exports_fp16_and_int8_match_onnx_runtime_fp32(gated: Path, synth_data: Path,
                                                                       tmp_path: Path) -> None:
    """Where a GPU with TensorRT is present: engines from export's own files, masks against FP32."""
    from convseg_deploy.imaging import logits_to_masks, preprocess
    from convseg_deploy.metrics import mean_dice
    from convseg_deploy.runtime.onnxruntime_runner import OnnxRuntimeRunner
    from convseg_deploy.runtime.tensorrt_runner import TensorRTRunner
    from convseg_deploy.exporters.calibration import load_frames
    from tests.runtime.test_tensorrt_runner import _real_tensorrt

    _real_tensorrt()
    frames = load_frames(synth_data, (64, 64), calib_count=1, calib_batch=1, verify_count=8, need_calibration=False)
    with OnnxRuntimeRunner(gated / "model.fp32.onnx") as runner:
        batch = preprocess(frames.verify, runner.preprocess)
        reference = logits_to_masks(runner.infer(batch), 0.5)
    for precision, minimum in (("fp16", 0.99), ("int8", 0.97)):
        engine = tmp_path / f"model.{precision}.engine"
        build_engine(gated / f"model.{precision}.onnx", engine, max_batch=8)
        with TensorRTRunner(engine) as runner:
            masks = logits_to_masks(runner.infer(batch), 0.5)
        assert mean_dice(masks, reference) >= minimum, precision
