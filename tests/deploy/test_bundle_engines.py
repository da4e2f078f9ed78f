"""Engines built on the device join the bundle (``build-engine --bundle``), end to end over the
strict TensorRT/pycuda doubles: build, verify, predict prefers it, tamper and mismatch refused,
the printed rebuild command rebuilds it, interrupted builds leave the bundle as it was."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from convseg_deploy.cli import main
from convseg_deploy.deploy.bundle import make_bundle
from convseg_deploy.fsutil import sha256_file
from convseg_deploy.exporters.frames_io import wrap_frames
from tests.deploy.cpu_runtime import CPU_LABEL
from tests.fakes import install, make_fake_tensorrt
from tests.fakes.onnx_models import mean_onnx

BUILT_WITH = "10.13.0"


def cli(*args: object):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def onnx_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bundle as it arrives on the device: model.fp16.onnx and its DeepStream variant, no engine."""
    art = tmp_path_factory.mktemp("device-art")
    mean_onnx(art / "model.fp16.onnx")
    wrap_frames(art / "model.fp16.onnx", art / "deepstream.fp16.onnx", io="deepstream")
    out = tmp_path_factory.mktemp("device-bundles") / "bundle"
    make_bundle(art, out, log=lambda _m: None)
    return out


@pytest.fixture()
def bundle(onnx_bundle: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "bundle"
    shutil.copytree(onnx_bundle, copy)
    return copy


def manifest_of(bundle: Path) -> dict:
    return json.loads((bundle / "manifest.json").read_text())


def image(tmp_path: Path) -> Path:
    from convseg_deploy.deploy.render import write_png

    write_png(tmp_path / "a.png", np.full((40, 70, 3), 180, np.uint8))
    return tmp_path / "a.png"


def test_the_bundle_carries_its_variant_apart_from_the_models_predict_runs(onnx_bundle: Path) -> None:
    manifest = manifest_of(onnx_bundle)
    assert [e["file"] for e in manifest["artifacts"]] == ["model.fp16.onnx"]
    (variant,) = manifest["frames_artifacts"]
    assert variant["file"] == "deepstream.fp16.onnx" and variant["io"] == "deepstream"
    assert variant["expected"] == "reference/expected_deepstream.fp16.png"
    assert variant["sha256"] == sha256_file(onnx_bundle / "deepstream.fp16.onnx")
    usage = (onnx_bundle / "USAGE.txt").read_text()
    assert f"convseg-deploy build-engine --bundle {onnx_bundle.name} --precision fp16 " in usage
    assert f"convseg-deploy deepstream --model {onnx_bundle.name} --out deepstream" in usage
    result = cli("verify", onnx_bundle)
    assert result.exit_code == 0, result.output
    row = next(line for line in result.output.splitlines() if line.startswith("deepstream.fp16.onnx "))
    assert row.split()[1:3] == ["ok", "ok"] and "dice 1.0000" in row


def test_build_engine_into_the_bundle_then_verify_and_predict_use_it(bundle: Path, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    install(monkeypatch, make_fake_tensorrt(BUILT_WITH))
    result = cli("build-engine", "--bundle", bundle, "--precision", "fp16", "--max-batch", 4)
    assert result.exit_code == 0, result.output
    assert f"built model.fp16.engine (fp16, TensorRT {BUILT_WITH}, NVIDIA H100 sm_90) from model.fp16.onnx" in result.output
    manifest = manifest_of(bundle)
    engine = next(e for e in manifest["artifacts"] if e["file"] == "model.fp16.engine")
    assert engine["sha256"] == sha256_file(bundle / "model.fp16.engine")
    assert engine["size_bytes"] == (bundle / "model.fp16.engine").stat().st_size
    assert engine["onnx_file"] == "model.fp16.onnx" and engine["onnx_sha256"] == sha256_file(bundle / "model.fp16.onnx")
    assert engine["tensorrt_version"] == BUILT_WITH and engine["gpu_name"] == "NVIDIA H100"
    assert engine["compute_capability"] == "9.0" and engine["expected"] == "reference/expected_fp16.png"
    assert engine["sidecar"]["sha256"] == sha256_file(bundle / "model.fp16.engine.json")
    assert sorted(p.name for p in bundle.iterdir() if p.name.startswith(".")) == []  # no staging or lock left
    usage = [" ".join(line.split()) for line in (bundle / "USAGE.txt").read_text().splitlines()]
    assert "model.fp16.engine engine fp16 TensorRT 10.13.0, sm_90, from model.fp16.onnx" in usage

    result = cli("verify", bundle)
    assert result.exit_code == 0, result.output
    row = next(line for line in result.output.splitlines() if line.startswith("model.fp16.engine "))
    assert row.split()[1:3] == ["ok", "ok"] and "dice" in row

    result = cli("predict", "--model", bundle, image(tmp_path), "--out", tmp_path / "out", "--no-progress")
    assert result.exit_code == 0, result.output
    assert "using model.fp16.engine on TensorRT" in result.output
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["backend"] == "tensorrt"


def test_a_tampered_engine_is_refused_by_verify_and_predict(bundle: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    install(monkeypatch, make_fake_tensorrt(BUILT_WITH))
    assert cli("build-engine", "--bundle", bundle, "--precision", "fp16").exit_code == 0
    data = bytearray((bundle / "model.fp16.engine").read_bytes())
    data[-2] ^= 1
    (bundle / "model.fp16.engine").write_bytes(bytes(data))
    result = cli("verify", bundle)
    assert result.exit_code == 1 and "model.fp16.engine (checksum mismatch (tampered or corrupted))" in result.output
    result = cli("predict", "--model", bundle, image(tmp_path), "--out", tmp_path / "out", "--no-progress")
    assert result.exit_code == 1
    assert f"Error: model.fp16.engine: checksum mismatch (tampered or corrupted): run 'convseg-deploy verify {bundle}'" \
        in result.output


def test_an_engine_from_another_tensorrt_is_refused_with_the_command_that_rebuilds_it(
        bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.MonkeyPatch.context() as mp:
        install(mp, make_fake_tensorrt(BUILT_WITH))
        assert cli("build-engine", "--bundle", bundle, "--precision", "fp16", "--max-batch", 2).exit_code == 0
    install(monkeypatch, make_fake_tensorrt("11.4.0"))  # the device was upgraded
    result = cli("verify", bundle)
    assert result.exit_code == 1
    command = f"convseg-deploy build-engine --bundle {bundle} --precision fp16 --min-batch 1 --opt-batch 1 --max-batch 2"
    assert f"(TensorRT version differ): rebuild it here with '{command}'" in result.output
    result = cli("predict", "--model", bundle, image(tmp_path), "--out", tmp_path / "out", "--no-progress")
    assert result.exit_code == 0 and f"using model.fp16.onnx on {CPU_LABEL}" in result.output
    assert "skipped model.fp16.engine on TensorRT" in result.output and command in result.output
    # the printed command, run as printed, rebuilds the engine in place of the old one
    result = cli(*command.split()[1:])
    assert result.exit_code == 0, result.output
    engines = [e for e in manifest_of(bundle)["artifacts"] if e["kind"] == "engine"]
    assert [(e["file"], e["tensorrt_version"]) for e in engines] == [("model.fp16.engine", "11.4.0")]
    assert cli("verify", bundle).exit_code == 0


def test_a_failed_or_refused_build_leaves_the_bundle_as_it_was(bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = {p.name: p.read_bytes() for p in bundle.iterdir() if p.is_file()}
    install(monkeypatch, make_fake_tensorrt(BUILT_WITH, fail_build=True))
    result = cli("build-engine", "--bundle", bundle, "--precision", "fp16")
    assert result.exit_code == 1 and "Error: TensorRT could not build an engine from" in result.output
    result = cli("build-engine", "--bundle", bundle, "--precision", "int8")
    assert result.exit_code == 1
    assert f"Error: {bundle} has no int8 ONNX file with tensor I/O to build from (it has fp16)" in result.output
    result = cli("build-engine", "--bundle", bundle, "--precision", "fp16", "--io", "holoscan")
    assert result.exit_code == 1 and "re-export with --io ...,holoscan and re-create the bundle" in result.output
    assert {p.name: p.read_bytes() for p in bundle.iterdir() if p.is_file()} == before
    assert not [p for p in bundle.iterdir() if p.name.startswith(".")]
    result = cli("build-engine", "--bundle", bundle)
    assert result.exit_code == 2 and "--bundle needs --precision" in result.output
    result = cli("build-engine", bundle / "model.fp16.onnx", "--bundle", bundle, "--precision", "fp16")
    assert result.exit_code == 2 and "drop ONNX and --out" in result.output


def test_a_tampered_source_onnx_is_not_built_from(bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install(monkeypatch, make_fake_tensorrt(BUILT_WITH))
    with open(bundle / "model.fp16.onnx", "ab") as fh:
        fh.write(b"x")
    result = cli("build-engine", "--bundle", bundle, "--precision", "fp16")
    assert result.exit_code == 1
    assert "model.fp16.onnx: size differs" in result.output and "run 'convseg-deploy verify" in result.output
    assert not (bundle / "model.fp16.engine").exists()


def test_an_engine_of_the_deepstream_variant_joins_the_variants(bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    trt = make_fake_tensorrt(BUILT_WITH)
    install(monkeypatch, trt)
    result = cli("build-engine", "--bundle", bundle, "--precision", "fp16", "--io", "deepstream")
    assert result.exit_code == 0, result.output
    assert ("set_optimization_profile_shape", "rgb", (1, 3, 64, 64), (1, 3, 64, 64), (8, 3, 64, 64)) in trt.calls
    manifest = manifest_of(bundle)
    assert [e["file"] for e in manifest["artifacts"]] == ["model.fp16.onnx"]  # predict never sees it
    engine = next(e for e in manifest["frames_artifacts"] if e["kind"] == "engine")
    assert engine["file"] == "deepstream.fp16.engine" and engine["io"] == "deepstream"
    assert engine["onnx_sha256"] == sha256_file(bundle / "deepstream.fp16.onnx")
    result = cli("verify", bundle)
    assert result.exit_code == 0, result.output
    assert "deepstream.fp16.engine: TensorRT 10.13.0 on NVIDIA H100 (sm_90); a deepstream engine runs inside its " \
           "framework, so it is checked for this device, not run" in result.output
    install(monkeypatch, make_fake_tensorrt("11.4.0"))
    result = cli("verify", bundle)
    assert result.exit_code == 1
    assert f"build-engine --bundle {bundle} --precision fp16 --io deepstream --min-batch 1" in result.output


def test_an_unlisted_engine_left_by_an_interruption_is_reported_and_the_rerun_finishes(
        bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install(monkeypatch, make_fake_tensorrt(BUILT_WITH))
    assert cli("build-engine", "--bundle", bundle, "--precision", "fp16").exit_code == 0
    manifest = manifest_of(bundle)
    manifest["artifacts"] = [e for e in manifest["artifacts"] if e["kind"] != "engine"]  # as if cut before the write
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    result = cli("verify", bundle)
    assert result.exit_code == 1 and "model.fp16.engine (a model file the manifest does not list" in result.output
    assert cli("build-engine", "--bundle", bundle, "--precision", "fp16").exit_code == 0
    assert cli("verify", bundle).exit_code == 0


def test_a_rebuild_cut_between_its_files_never_leaves_the_manifest_vouching_for_a_changed_file(
        bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The disk fills up after the new engine replaced the old one but before its sidecar did: the
    manifest must already have let go of the old engine, so predict keeps working on the ONNX file."""
    import errno
    import os

    from convseg_deploy.exporters import bundle_engine

    with pytest.MonkeyPatch.context() as mp:
        install(mp, make_fake_tensorrt(BUILT_WITH))
        assert cli("build-engine", "--bundle", bundle, "--precision", "fp16").exit_code == 0
    install(monkeypatch, make_fake_tensorrt("11.4.0"))
    real_replace = os.replace

    def replace(src: object, dst: object) -> None:
        if Path(dst) == bundle / "model.fp16.engine.json":  # the move into the bundle, not the write into staging
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_replace(src, dst)

    monkeypatch.setattr(bundle_engine.os, "replace", replace)
    result = cli("build-engine", "--bundle", bundle, "--precision", "fp16")
    assert result.exit_code == 1 and f"Error: cannot write the engine into {bundle}: No space left on device" in result.output
    assert [e["file"] for e in manifest_of(bundle)["artifacts"]] == ["model.fp16.onnx"]
    result = cli("predict", "--model", bundle, image(tmp_path), "--out", tmp_path / "out", "--no-progress")
    assert result.exit_code == 0 and f"using model.fp16.onnx on {CPU_LABEL}" in result.output
    assert "model.fp16.engine (a model file the manifest does not list" in cli("verify", bundle).output
    monkeypatch.setattr(bundle_engine.os, "replace", real_replace)
    assert cli("build-engine", "--bundle", bundle, "--precision", "fp16").exit_code == 0
    assert cli("verify", bundle).exit_code == 0


def test_an_engine_built_from_another_onnx_file_is_refused_by_verify(bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Checksums that hold are not enough: the sidecar must name the bundled ONNX file's sha256."""
    install(monkeypatch, make_fake_tensorrt(BUILT_WITH))
    assert cli("build-engine", "--bundle", bundle, "--precision", "fp16", "--io", "deepstream").exit_code == 0
    side = bundle / "deepstream.fp16.engine.json"
    sidecar = json.loads(side.read_text())
    sidecar["onnx_sha256"] = "0" * 64  # built from an earlier export's file of the same name
    side.write_text(json.dumps(sidecar))
    manifest = manifest_of(bundle)
    entry = next(e for e in manifest["frames_artifacts"] if e["kind"] == "engine")
    entry["sidecar"].update(sha256=sha256_file(side), size_bytes=side.stat().st_size)
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    result = cli("verify", bundle)
    assert result.exit_code == 1
    assert "deepstream.fp16.engine: it was built from another deepstream.fp16.onnx (sha256 000000000000..." in result.output
    assert f"rebuild it with 'convseg-deploy build-engine --bundle {bundle} --precision fp16 --io deepstream" in result.output
    result = cli("deepstream", "--model", bundle, "--out", bundle.parent / "ds")
    assert result.exit_code == 1 and "was not built from this bundle's deepstream.fp16.onnx" in result.output
