"""``convseg-deploy triton``: the model repository, each config.pbtxt parsed with Triton's own schema."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from convseg_deploy.cli import main
from convseg_deploy.errors import ConvSegError
from convseg_deploy.artifacts.names import precision_from_triton_model
from convseg_deploy.exporters.triton_repo import write_repository
from convseg_deploy.exporters.triton_spec import RepoOptions
from tests.benchmarks.conftest import fake_engine


def parse_config(path: Path) -> Any:
    """config.pbtxt as Triton's ModelConfig message (the schema tritonclient ships)."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


@pytest.fixture
def artifacts(exported: Path, tmp_path: Path) -> Path:
    """The session's export (model.fp32.onnx, model.int8-cpu.onnx) plus an fp16 engine with its sidecar."""
    folder = tmp_path / "artifacts"
    shutil.copytree(exported, folder)
    fake_engine(folder, "fp16")
    return folder


def test_repository_for_gpu_servers(artifacts: Path, tmp_path: Path) -> None:
    from tritonclient.grpc import model_config_pb2 as pb

    repo = tmp_path / "repo"
    options = RepoOptions(kind="gpu", backends=("onnxruntime", "python"), max_batch=16, preferred_batch=(4, 16),
                          queue_delay_us=200, instances=2)
    served = write_repository(str(artifacts), repo, options)
    names = sorted(m.name for m in served)
    assert names == ["convseg_fp16_tensorrt", "convseg_fp32_onnxruntime", "convseg_fp32_python",
                     "convseg_int8_cpu_onnxruntime", "convseg_int8_cpu_python"]
    assert sorted(p.name for p in repo.iterdir()) == sorted([*names, "README.md"])
    configs = {n: parse_config(repo / n / "config.pbtxt") for n in names}
    for name, config in configs.items():
        assert config.name == name
        assert list(config.dynamic_batching.preferred_batch_size) == [b for b in (4, 16) if b <= config.max_batch_size]
        assert config.dynamic_batching.max_queue_delay_microseconds == 200
        assert [(g.count, g.kind) for g in config.instance_group] == [(2, pb.ModelInstanceGroup.KIND_GPU)]

    ort = configs["convseg_fp32_onnxruntime"]
    assert ort.platform == "onnxruntime_onnx" and ort.max_batch_size == 16
    assert [(i.name, i.data_type, list(i.dims)) for i in ort.input] == [("frames", pb.TYPE_UINT8, [64, 64, 3])]
    assert [(o.name, o.data_type, list(o.dims)) for o in ort.output] == [("mask", pb.TYPE_UINT8, [64, 64]),
                                                                          ("probability", pb.TYPE_FP32, [64, 64])]
    (accelerator,) = ort.optimization.execution_accelerators.gpu_execution_accelerator
    assert accelerator.name == "tensorrt" and accelerator.parameters["precision_mode"] == "FP32"
    # UINT8-activation int8-cpu is no TensorRT model: no accelerator for it
    assert not configs["convseg_int8_cpu_onnxruntime"].optimization.execution_accelerators.gpu_execution_accelerator

    python = configs["convseg_fp32_python"]
    assert python.backend == "python" and not python.platform
    assert sorted(p.name for p in (repo / "convseg_fp32_python" / "1").iterdir()) == ["model.onnx", "model.py"]

    plan = configs["convseg_fp16_tensorrt"]
    assert plan.platform == "tensorrt_plan" and plan.max_batch_size == 8  # the engine profile's max, not --max-batch
    assert [(i.name, i.data_type, list(i.dims)) for i in plan.input] == [("image", pb.TYPE_FP32, [3, 64, 64])]
    assert (repo / "convseg_fp16_tensorrt" / "1" / "model.plan").read_bytes() == b"not a real engine"
    assert precision_from_triton_model("convseg_int8_cpu_python") == "int8-cpu"
    assert precision_from_triton_model("resnet50") == "unknown"

    readme = (repo / "README.md").read_text()
    assert "tritonserver --model-repository=/models" in readme and "--gpus all" in readme
    assert 'client.infer("convseg_fp32_onnxruntime"' in readme


def test_wrapped_model_in_repository_matches_the_export(artifacts: Path, tmp_path: Path, synth_data: Path) -> None:
    """model.onnx of a repository made from a tensor export is the frames-in wrapper of it."""
    import numpy as np
    import onnxruntime as ort

    from convseg_deploy.data import find_samples, load_samples
    from convseg_deploy.imaging import logits_to_masks, preprocess
    from convseg_deploy.metrics import mean_dice
    from convseg_deploy.artifacts.onnx_meta import preprocess_from_metadata, read_metadata

    write_repository(str(artifacts / "model.fp32.onnx"), tmp_path / "repo", RepoOptions(kind="cpu"))
    frames, _ = load_samples(find_samples(synth_data)[:8], (64, 64))
    spec, threshold = preprocess_from_metadata(read_metadata(artifacts / "model.fp32.onnx"))
    logits = ort.InferenceSession(str(artifacts / "model.fp32.onnx")).run(None, {"image": preprocess(frames, spec)})[0]
    served = ort.InferenceSession(str(tmp_path / "repo" / "convseg_fp32_onnxruntime" / "1" / "model.onnx"))
    mask = served.run(["mask"], {"frames": frames})[0]
    assert mask.shape == (8, 64, 64) and mean_dice(mask == 255, logits_to_masks(logits, threshold)) >= 0.999
    assert np.isin(mask, (0, 255)).all()
    config = parse_config(tmp_path / "repo" / "convseg_fp32_onnxruntime" / "config.pbtxt")
    assert not config.optimization.execution_accelerators.gpu_execution_accelerator  # CPU instances


@pytest.mark.parametrize(("options", "pick", "message"), [
    (RepoOptions(kind="cpu"), "model.fp16.engine", "needs a GPU instance"),
    (RepoOptions(max_batch=4, preferred_batch=(8,)), "model.fp32.onnx", "--preferred-batch"),
    (RepoOptions(backends=("tensorflow",)), "model.fp32.onnx", "--backend 'tensorflow'"),
    (RepoOptions(name="../x"), "model.fp32.onnx", "--name"),
    (RepoOptions(), "manifest.json", "Triton serves ONNX files and TensorRT engines"),
    (RepoOptions(), "missing.onnx", "not found"),
])
def test_unservable_input_is_one_line_and_writes_nothing(artifacts: Path, tmp_path: Path, options: RepoOptions,
                                                         pick: str, message: str) -> None:
    out = tmp_path / "out" / "repo"
    with pytest.raises(ConvSegError, match=message) as info:
        write_repository(str(artifacts / pick), out, options)
    assert "\n" not in str(info.value)
    assert not out.exists() and (not out.parent.exists() or not any(out.parent.iterdir()))


def test_onnx_without_metadata_is_refused(artifacts: Path, tmp_path: Path) -> None:
    import onnx

    model = onnx.load(str(artifacts / "model.fp32.onnx"))
    del model.metadata_props[:]
    onnx.save(model, str(tmp_path / "bare.onnx"))
    with pytest.raises(ConvSegError, match="no convseg_deploy metadata"):
        write_repository(str(tmp_path / "bare.onnx"), tmp_path / "repo", RepoOptions())
    assert not (tmp_path / "repo").exists()


def test_cli_refuses_a_non_empty_folder_and_keeps_it(artifacts: Path, tmp_path: Path) -> None:
    out = tmp_path / "repo"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    result = CliRunner().invoke(main, ["triton", "--artifacts", str(artifacts), "--out", str(out)])
    assert result.exit_code == 1
    assert result.output.startswith("Error: ") and "not an empty folder" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_cli_writes_a_cpu_repository(artifacts: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["triton", "--artifacts", f"{artifacts / 'model.int8-cpu.onnx'}", "--out",
                                       str(tmp_path / "repo"), "--kind", "cpu", "--backend", "python", "--name", "polyp",
                                       "--max-batch", "4", "--preferred-batch", "2,4", "--threads", "2"])
    assert result.exit_code == 0, result.output
    config = parse_config(tmp_path / "repo" / "polyp_int8_cpu_python" / "config.pbtxt")
    assert config.max_batch_size == 4 and list(config.dynamic_batching.preferred_batch_size) == [2, 4]
    assert config.parameters["intra_op_threads"].string_value == "2"
    assert "wrote 1 model(s)" in result.output


def test_the_framework_variants_stay_out_of_a_triton_repository(framework_export: Path, tmp_path: Path) -> None:
    """Triton gets the frames variant of a precision when there is one, else the tensor model to wrap,
    never the Holoscan or DeepStream files, which take what those frameworks hand over."""
    from convseg_deploy.deploy.bundle import make_bundle
    from convseg_deploy.exporters.triton_repo import _plan, collect_models

    picks = ["model.fp16.onnx", "deepstream.fp16.onnx", "holoscan.fp16.onnx", "frames.fp32.onnx", "deepstream.fp32.onnx"]
    bundle = tmp_path / "bundle"
    make_bundle(framework_export, bundle, picks, log=lambda _m: None)
    served = _plan(collect_models(str(bundle)), RepoOptions(kind="cpu", backends=("python",)))
    assert sorted((m.name, m.source.name, m.frames) for m in served) == [
        ("convseg_fp16_python", "model.fp16.onnx", False), ("convseg_fp32_python", "frames.fp32.onnx", True)]
