"""The export pipeline on the tiny trained model: files, metadata, checks, INT8 flavours, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import numpy_helper

from convseg_deploy.cli import main
from convseg_deploy.errors import ConvSegError
from convseg_deploy.fsutil import sha256_file
from convseg_deploy.artifacts.onnx_meta import read_metadata
from convseg_deploy.exporters.pipeline import export_artifacts

QUIET = {"log": lambda _msg: None}


@pytest.fixture(scope="module")
def all_precisions(trained_checkpoint: Path, synth_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("all")
    export_artifacts(trained_checkpoint, out, calib_data=synth_data, calib_count=16, verify_count=8,
                     min_agreement=0.0, max_dice_drop=None, **QUIET)
    return out


def test_every_precision_is_written_checked_and_listed(all_precisions: Path, trained_checkpoint: Path) -> None:
    manifest = json.loads((all_precisions / "manifest.json").read_text())
    files = {a["precision"]: a for a in manifest["artifacts"]}
    assert set(files) == {"fp32", "fp16", "int8", "int8-cpu"}
    for precision, art in files.items():
        path = all_precisions / art["file"]
        assert art["file"] == f"model.{precision}.onnx"
        assert art["sha256"] == sha256_file(path) and art["size_bytes"] == path.stat().st_size
        assert art["input_shapes"] == {"image": ["batch", 3, 64, 64]}
        model = onnx.load(str(path))
        declared = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
        assert art["opset"] == declared and (precision == "int8" or declared == 17)  # the file's own, ModelOpt's 19
        onnx.checker.check_model(model, full_check=True)
        # FP32 I/O for every precision: consumers feed the same preprocessed batch
        assert model.graph.input[0].name == "image" and model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
        assert model.graph.output[0].name == "logits" and model.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
        meta = read_metadata(path)
        assert meta["precision"] == precision and meta["preprocess"]["size"] == [64, 64]
        assert meta["source_sha256"] == sha256_file(trained_checkpoint) == manifest["source_sha256"]
        assert {"torch", "onnx", "onnxruntime"} <= set(meta["versions"])
    assert files["fp32"]["verification"]["max_relative_error_vs_torch"] <= 1e-4
    for precision in ("fp16", "int8", "int8-cpu"):
        assert 0.0 <= files[precision]["verification"]["agreement_vs_fp32"] <= 1.0
    # int8-cpu is scored the way predict runs it; int8 (TensorRT) with the reference Q/DQ run
    assert {p: files[p]["verification"]["qdq_run"] for p in ("int8", "int8-cpu")} == {
        "int8": "reference", "int8-cpu": "onnxruntime-int8-kernels"}
    assert not list(all_precisions.glob(".export-*")), "the staging folder was left behind"


def test_fp16_has_half_weights(all_precisions: Path) -> None:
    model = onnx.load(str(all_precisions / "model.fp16.onnx"))
    conv_weights = {n.input[1] for n in model.graph.node if n.op_type == "Conv"}
    types = {t.data_type for t in model.graph.initializer if t.name in conv_weights}
    assert types == {onnx.TensorProto.FLOAT16}


def _zero_points(model: onnx.ModelProto, op: str) -> list[np.ndarray]:
    inits = {t.name: t for t in model.graph.initializer}
    return [numpy_helper.to_array(inits[n.input[2]]) for n in model.graph.node if n.op_type == op and len(n.input) > 2]


def test_int8_flavours_differ_as_their_targets_need(all_precisions: Path) -> None:
    trt = onnx.load(str(all_precisions / "model.int8.onnx"))
    cpu = onnx.load(str(all_precisions / "model.int8-cpu.onnx"))
    trt_q = _zero_points(trt, "QuantizeLinear")
    cpu_q = _zero_points(cpu, "QuantizeLinear")
    assert trt_q and cpu_q
    # TensorRT: activations INT8 with zero point 0; CPU flavour: UINT8 activations (asymmetric)
    assert all(z.dtype == np.int8 and not z.any() for z in trt_q)
    assert all(z.dtype == np.uint8 for z in cpu_q)
    for model in (trt, cpu):  # weights INT8, per channel, symmetric
        # per-channel zero points (vectors); int32 ones belong to the biases
        weight_dq = [z for z in _zero_points(model, "DequantizeLinear") if z.ndim == 1 and z.size > 1 and z.dtype != np.int32]
        assert weight_dq and all(z.dtype == np.int8 and not z.any() for z in weight_dq)


def test_first_convolutions_and_head_stay_float(all_precisions: Path) -> None:
    model = onnx.load(str(all_precisions / "model.int8.onnx"))
    producers = {o: n for n in model.graph.node for o in n.output}
    inits = {t.name for t in model.graph.initializer}
    float_convs = [n for n in model.graph.node if n.op_type == "Conv" and ("image" in n.input or "logits" in n.output)]
    assert len(float_convs) == 3  # encoder stem, the image skip, the head
    for node in float_convs:
        weight = node.input[1]
        assert weight in inits or producers[weight].op_type != "DequantizeLinear", node.name
    assert set(read_metadata(all_precisions / "model.int8.onnx")["float_nodes"]) >= {n.name for n in float_convs}


def test_calibration_runs_once_and_the_cache_is_keyed(trained_checkpoint: Path, synth_data: Path, tmp_path: Path) -> None:
    cache = tmp_path / "ranges.json"
    kw = dict(calib_data=synth_data, calib_count=8, verify_count=4, min_agreement=0.0, max_dice_drop=None, calib_cache=cache,
              calib_method="percentile", **QUIET)  # one method for both flavours: "auto" gives each its own
    first = export_artifacts(trained_checkpoint, tmp_path / "a", ("fp32", "int8", "int8-cpu"), **kw)
    reused = {a["precision"]: a["verification"]["calibration_cache_reused"] for a in first["artifacts"] if a["precision"] != "fp32"}
    assert reused == {"int8": False, "int8-cpu": True}  # one calibration served both flavours
    again = export_artifacts(trained_checkpoint, tmp_path / "b", ("int8",), **kw)
    assert again["artifacts"][0]["verification"]["calibration_cache_reused"] is True
    kw["calib_count"] = 12  # other calibration frames: the cache must not be reused
    changed = export_artifacts(trained_checkpoint, tmp_path / "c", ("int8",), **kw)
    assert changed["artifacts"][0]["verification"]["calibration_cache_reused"] is False


def test_int8_alone_calibrates_what_it_quantizes_and_int8_cpu_tops_the_cache_up(
        trained_checkpoint: Path, synth_data: Path, tmp_path: Path) -> None:
    import onnx
    from onnxruntime.quantization.calibrate import load_tensors_data

    from convseg_deploy.exporters.int8_modelopt import quantized_activations

    cache = tmp_path / "ranges.json"
    kw = dict(calib_data=synth_data, calib_count=6, verify_count=4, min_agreement=0.0, max_dice_drop=None, calib_cache=cache,
              calib_method="percentile", **QUIET)  # one method for both flavours: "auto" gives each its own
    export_artifacts(trained_checkpoint, tmp_path / "a", ("int8",), **kw)
    placed = quantized_activations(onnx.load(str(tmp_path / "a" / "model.int8.onnx")))
    kept = cache.with_name("ranges.percentile.json")  # the method's own cache beside the given name
    assert set(load_tensors_data(kept).data) == placed  # only what the file quantizes was calibrated
    assert json.loads(kept.with_name("ranges.percentile.json.key").read_text())["complete"] is False
    cpu = export_artifacts(trained_checkpoint, tmp_path / "b", ("int8-cpu",), **kw)
    assert cpu["artifacts"][0]["verification"]["calibration_cache_reused"] is False  # int8-cpu needs more tensors
    topped = set(load_tensors_data(kept).data)
    assert topped > placed and json.loads(kept.with_name("ranges.percentile.json.key").read_text())["complete"] is True
    for flavour in ("int8-cpu", "int8"):
        again = export_artifacts(trained_checkpoint, tmp_path / flavour, (flavour,), **kw)
        assert again["artifacts"][0]["verification"]["calibration_cache_reused"] is True


def test_under_auto_each_flavour_keeps_its_own_range_cache(trained_checkpoint: Path, synth_data: Path, tmp_path: Path) -> None:
    """Under the default "auto", int8 (percentile) and int8-cpu (min/max) calibrate apart; a
    second export must find both caches, not one file overwritten by the other's method."""
    cache = tmp_path / "ranges.json"
    kw = dict(calib_data=synth_data, calib_count=6, verify_count=4, min_agreement=0.0, max_dice_drop=None, calib_cache=cache,
              **QUIET)
    first = export_artifacts(trained_checkpoint, tmp_path / "a", ("fp32", "int8", "int8-cpu"), **kw)
    assert {a["verification"]["calibration_cache_reused"] for a in first["artifacts"] if a["precision"] != "fp32"} == {False}
    for method in ("percentile", "minmax"):
        assert json.loads(cache.with_name(f"ranges.{method}.json.key").read_text())["method"] == method
    assert not cache.exists()
    again = export_artifacts(trained_checkpoint, tmp_path / "b", ("int8", "int8-cpu"), **kw)
    assert {a["precision"]: a["verification"]["calibration_cache_reused"] for a in again["artifacts"]} == {
        "int8": True, "int8-cpu": True}


@pytest.mark.parametrize("method", ["minmax", "entropy"])
def test_optimised_calibration_gives_onnx_runtimes_own_ranges(method: str, exported: Path, synth_data: Path, tmp_path: Path) -> None:
    """calibrate() runs ORT's calibration model in an optimised session; the ranges must be the
    ones ORT's quantize_static computes by itself (unoptimised session)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, quantize_static
    from onnxruntime.quantization.calibrate import load_tensors_data

    from convseg_deploy.config import PreprocessSpec
    from convseg_deploy.exporters.calibration import calibration_batches, load_frames
    from convseg_deploy.exporters.int8 import BatchReader, calibrate

    fp32 = exported / "model.fp32.onnx"
    frames = load_frames(synth_data, (64, 64), calib_count=6, calib_batch=2, verify_count=2,
                         need_calibration=True)
    batches = calibration_batches(frames.calib, PreprocessSpec(size=(64, 64)), 2)
    ours = calibrate(fp32, batches, method, threads=1)
    method_enum = CalibrationMethod.MinMax if method == "minmax" else CalibrationMethod.Entropy
    quantize_static(str(fp32), str(tmp_path / "q.onnx"), BatchReader(batches), quant_format=QuantFormat.QDQ,
                    calibrate_method=method_enum, calibration_cache_path=str(tmp_path / "ort.json"))
    theirs = load_tensors_data(tmp_path / "ort.json").data
    assert set(ours) == set(theirs) and len(ours) > 50
    some = set(sorted(ours)[::7])  # a subset (what the int8 placement asks for) gets the same ranges
    subset = calibrate(fp32, batches, method, threads=1, tensors=some)
    assert set(subset) == some
    for name, data in theirs.items():
        for mine in (ours, subset):
            if name in mine:
                np.testing.assert_allclose(np.asarray(mine[name].range_value, np.float64),
                                           np.asarray(data.range_value, np.float64), rtol=1e-4, atol=1e-5, err_msg=name)


def test_a_model_that_misses_its_check_is_not_left(trained_checkpoint: Path, synth_data: Path, tmp_path: Path) -> None:
    with pytest.raises(ConvSegError, match=r"fp16: mask agreement .* below the minimum 1.01"):
        export_artifacts(trained_checkpoint, tmp_path, ("fp32", "fp16"), calib_data=synth_data, verify_count=4,
                         min_agreement=1.01, **QUIET)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json", "model.fp32.onnx"]
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert [a["precision"] for a in manifest["artifacts"]] == ["fp32"]


def test_an_int8_file_whose_dice_drop_bound_exceeds_the_allowance_is_refused_and_not_left(
        trained_checkpoint: Path, synth_data: Path, tmp_path: Path) -> None:
    # No Dice loss at all is allowed: any frame that INT8 makes worse lifts the upper bound over 0,
    # also after the search has kept layers in float. The refusal export_defaults_target waits
    # for on a real checkpoint whose ranges lose.
    with pytest.raises(ConvSegError, match=r"int8-cpu: .*upper 95% bound \+0\.\d+ .*short of .*Dice drop bound <= 0\.0"):
        export_artifacts(trained_checkpoint, tmp_path, ("fp32", "int8-cpu"), calib_data=synth_data, calib_count=8,
                         verify_count=8, min_agreement=0.0, max_dice_drop=0.0, **QUIET)
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".onnx") == ["model.fp32.onnx"]
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert [a["precision"] for a in manifest["artifacts"]] == ["fp32"]


def test_dynamic_size_and_static_batch(trained_checkpoint: Path, tmp_path: Path) -> None:
    export_artifacts(trained_checkpoint, tmp_path / "dyn", ("fp32",), dynamic_size=True, verify_count=2, **QUIET)
    dims = onnx.load(str(tmp_path / "dyn" / "model.fp32.onnx")).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["batch", 3, "height", "width"]
    export_artifacts(trained_checkpoint, tmp_path / "static", ("fp32",), static_batch=True, image_size=(96, 96),
                     verify_count=2, **QUIET)
    dims = onnx.load(str(tmp_path / "static" / "model.fp32.onnx")).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims] == [1, 3, 96, 96]


def _export(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["export", *args])
    return result.exit_code, result.output


@pytest.mark.parametrize(("extra", "message"), [
    (["--image-size", "70", "70"], "image size 70x70 is not supported"),
    (["--opset", "21"], "opset 21 cannot carry INT8"),
    (["--precision", "fp32", "--opset", "21"], "opset 21 is not supported"),
    (["--precision", "fp32,int9"], "unknown precision 'int9'"),
    (["--calib-batch", "200"], "fewer than the calibration batch (200)"),
])
def test_bad_export_options_are_one_line_errors(extra: list[str], message: str, trained_checkpoint: Path,
                                                synth_data: Path, tmp_path: Path) -> None:
    code, output = _export("--checkpoint", str(trained_checkpoint), "--out", str(tmp_path / "o"), "--calib-data", str(synth_data),
                           *extra)
    assert code == 1 and message in output, output
    assert output.count("\n") == 1 and output.startswith("Error: ") and "Traceback" not in output
    assert not list((tmp_path / "o").glob("*.onnx")) if (tmp_path / "o").exists() else True


def test_bad_export_inputs_are_one_line_errors(trained_checkpoint: Path, tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"PK\x03\x04 not really a zip")
    empty = tmp_path / "empty"
    empty.mkdir()
    blocked = tmp_path / "file"
    blocked.write_text("a file where the output folder should go")
    cases = [
        (["--checkpoint", str(tmp_path / "missing.pt"), "--calib-data", "synth"], "not found"),
        (["--checkpoint", str(corrupt), "--calib-data", "synth"], "cannot be read"),
        (["--checkpoint", str(trained_checkpoint), "--calib-data", str(empty)], "no known layout"),
        (["--checkpoint", str(trained_checkpoint), "--precision", "int8"], "need calibration frames"),
        # the default precisions need --calib-data: said before the checkpoint is even read
        (["--checkpoint", str(tmp_path / "missing.pt")], "(in the default --precision) need calibration frames"),
    ]
    for args, message in cases:
        code, output = _export(*args, "--out", str(tmp_path / "o"))
        assert code == 1 and message in output and output.count("\n") == 1, output
    code, output = _export("--checkpoint", str(trained_checkpoint), "--precision", "fp32", "--out", str(blocked / "sub"))
    assert code == 1 and "cannot create output folder" in output, output


def test_engine_flag_without_tensorrt_fails_before_exporting(trained_checkpoint: Path, tmp_path: Path) -> None:
    code, output = _export("--checkpoint", str(trained_checkpoint), "--out", str(tmp_path / "o"), "--precision", "fp32,fp16",
                           "--engine")
    assert code == 1 and output.count("\n") == 1, output
    assert "TensorRT is not installed" in output and "convseg-deploy[tensorrt]" in output
    assert not (tmp_path / "o").exists()  # --engine promised engines: nothing is half done


def test_build_engine_without_tensorrt_fails_cleanly(all_precisions: Path) -> None:
    result = CliRunner().invoke(main, ["build-engine", str(all_precisions / "model.fp16.onnx")])
    assert result.exit_code == 1 and result.output.startswith("Error: ") and result.output.count("\n") == 1
    assert 'pip install "convseg-deploy[tensorrt]"' in result.output
    assert not list(all_precisions.glob("*.engine*"))
