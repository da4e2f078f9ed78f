"""Planning rows from the options: artifact folders, manifests, file lists and placeholders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from convseg_deploy.benchmarks.plan import collect_artifacts, plan_rows, precision_from_name
from convseg_deploy.errors import ConvSegError
from tests.benchmarks.conftest import fake_engine


def touch(path: Path) -> Path:
    path.write_bytes(b"x")
    return path


def test_precision_from_name() -> None:
    assert precision_from_name(Path("model.int8-cpu.onnx")) == "int8-cpu"
    assert precision_from_name(Path("model.fp16.engine")) == "fp16"
    assert precision_from_name(Path("mine.onnx")) == "unknown"


def test_folder_uses_exactly_the_manifest_and_the_engines_built_from_it(tmp_path: Path) -> None:
    from convseg_deploy.fsutil import sha256_file

    touch(tmp_path / "model.fp32.onnx")  # left by an earlier export: not listed, never measured
    int8 = touch(tmp_path / "model.int8.onnx")
    record = {"file": int8.name, "precision": "int8", "sha256": sha256_file(int8), "size_bytes": 1}
    (tmp_path / "manifest.json").write_text(json.dumps({"artifacts": [record]}))
    stale = fake_engine(tmp_path, "fp32")  # its sidecar names no source ONNX
    tied = fake_engine(tmp_path, "int8")
    sidecar = tied.with_name(tied.name + ".json")
    sidecar.write_text(json.dumps({**json.loads(sidecar.read_text()), "onnx_file": int8.name,
                                   "onnx_sha256": record["sha256"], "engine_sha256": sha256_file(tied)}))
    found = [(p.name, prec) for p, prec in collect_artifacts(str(tmp_path))]
    assert found == [("model.int8.onnx", "int8"), ("model.int8.engine", "int8")]
    assert stale.name not in {name for name, _ in found}


def test_folder_without_manifest_uses_its_files(tmp_path: Path) -> None:
    touch(tmp_path / "model.fp32.onnx")
    fake_engine(tmp_path, "fp16")
    found = [(p.name, prec) for p, prec in collect_artifacts(str(tmp_path))]
    assert found == [("model.fp32.onnx", "fp32"), ("model.fp16.engine", "fp16")]


def test_manifest_entry_without_checksum_is_refused(tmp_path: Path) -> None:
    touch(tmp_path / "model.int8.onnx")
    (tmp_path / "manifest.json").write_text(json.dumps({"artifacts": [{"file": "model.int8.onnx", "precision": "int8"}]}))
    with pytest.raises(ConvSegError, match="model.int8.onnx: the manifest gives no sha256"):
        collect_artifacts(str(tmp_path))


def test_comma_list_dedupes_and_rejects_unknown(tmp_path: Path) -> None:
    a = touch(tmp_path / "model.fp32.onnx")
    assert len(collect_artifacts(f"{a},{a}")) == 1
    with pytest.raises(ConvSegError, match="not found"):
        collect_artifacts(str(tmp_path / "missing.onnx"))
    with pytest.raises(ConvSegError, match="not a model file"):
        collect_artifacts(str(touch(tmp_path / "notes.txt")))


def test_rows_cover_backends_providers_precisions_and_batches(tmp_path: Path) -> None:
    onnx = touch(tmp_path / "model.fp32.onnx")
    ckpt = touch(tmp_path / "best.pt")
    rows = plan_rows(ckpt, str(onnx), ["torch", "onnxruntime", "tensorrt"], ["cpu", "cuda"], [1, 8])
    keys = [(r.backend, r.provider, r.precision, r.batch_size) for r in rows]
    assert keys[:8] == [("torch", "cpu", "fp32", 1), ("torch", "cpu", "fp32", 8), ("torch", "cpu", "bf16", 1),
                        ("torch", "cpu", "bf16", 8), ("torch", "cuda", "fp32", 1),
                        ("torch", "cuda", "fp32", 8), ("torch", "cuda", "fp16", 1), ("torch", "cuda", "fp16", 8)]
    assert keys[8:12] == [("onnxruntime", "cpu", "fp32", 1), ("onnxruntime", "cpu", "fp32", 8),
                          ("onnxruntime", "cuda", "fp32", 1), ("onnxruntime", "cuda", "fp32", 8)]
    placeholder = rows[-1]
    assert placeholder.backend == "tensorrt" and placeholder.artifact is None and ".engine" in placeholder.note


def test_bad_choices_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(ConvSegError, match="--backends: unknown value 'tflite'"):
        plan_rows(None, None, ["tflite"], ["cpu"], [1])
    with pytest.raises(ConvSegError, match="--providers"):
        plan_rows(None, None, ["torch"], ["rocm"], [1])
    # gpu/npu are OpenVINO's Intel devices: no ONNX Runtime or PyTorch rows for them
    rows = plan_rows(None, str(touch(tmp_path / "model.fp32.onnx")), ["onnxruntime", "openvino"], ["gpu"], [1])
    assert {(r.backend, r.provider) for r in rows} == {("onnxruntime", "-"), ("openvino", "gpu"),
                                                       ("openvino", "gpu-throughput")}
