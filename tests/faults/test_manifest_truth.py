"""The manifest is the truth: tampered entries fail verify, stale files never travel or run."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from convseg_deploy.deploy.bundle import make_bundle
from convseg_deploy.deploy.render import write_png
from convseg_deploy.synth import render_frame
from tests.faults.helpers import cli, error_line


def tamper(bundle: Path, change) -> None:  # noqa: ANN001 - a function of the first artifact entry
    path = bundle / "manifest.json"
    manifest = json.loads(path.read_text())
    change(manifest["artifacts"][0])
    path.write_text(json.dumps(manifest))


@pytest.mark.parametrize("change, expected", [
    (lambda e: e.pop("sha256"), "the manifest gives no sha256"),
    (lambda e: e.pop("size_bytes"), "the manifest gives no size_bytes"),
    (lambda e: e.update(file="../../elsewhere/model.onnx"), "not a plain relative path"),
    (lambda e: e.update(file="/etc/model.onnx"), "not a plain relative path"),
])
def test_a_manifest_entry_that_skips_its_check_fails_verify(bundle_copy: Path, change, expected: str) -> None:  # noqa: ANN001
    tamper(bundle_copy, change)
    result = cli("verify", bundle_copy)
    assert result.exit_code == 1
    assert "verify failed" in error_line(result.output) and expected in result.output


def test_an_entry_without_checksum_cannot_hide_a_corrupted_model(bundle_copy: Path) -> None:
    tamper(bundle_copy, lambda e: e.pop("sha256"))
    name = json.loads((bundle_copy / "manifest.json").read_text())["artifacts"][0]["file"]
    data = bytearray((bundle_copy / name).read_bytes())
    data[-10] ^= 0xFF  # same size, other bytes
    (bundle_copy / name).write_bytes(bytes(data))
    result = cli("verify", bundle_copy)
    assert result.exit_code == 1 and "checksum ok" not in result.output
    assert name in error_line(result.output)


def test_a_symlink_out_of_the_bundle_fails_verify(bundle_copy: Path, tmp_path: Path) -> None:
    name = json.loads((bundle_copy / "manifest.json").read_text())["artifacts"][0]["file"]
    outside = tmp_path / "outside.onnx"
    shutil.move(bundle_copy / name, outside)
    os.symlink(outside, bundle_copy / name)  # same bytes, but the bundle no longer holds them
    result = cli("verify", bundle_copy)
    assert result.exit_code == 1 and f"{name} (a symbolic link" in error_line(result.output)


def test_a_model_file_the_manifest_does_not_list_fails_verify(bundle_copy: Path) -> None:
    shutil.copyfile(bundle_copy / "model.fp32.onnx", bundle_copy / "model.fp16.onnx")
    result = cli("verify", bundle_copy)
    assert result.exit_code == 1
    assert "model.fp16.onnx (a model file the manifest does not list" in error_line(result.output)


def test_predict_on_an_export_folder_runs_only_listed_files(artifacts: Path, tmp_path: Path) -> None:
    art = Path(shutil.copytree(artifacts, tmp_path / "art"))
    shutil.copyfile(art / "model.fp32.onnx", art / "model.fp16.onnx")  # a leftover the manifest does not list
    image = tmp_path / "in" / "a.png"
    write_png(image, render_frame(np.random.default_rng(1), 64)[0])
    result = cli("predict", "--model", art, image, "--out", tmp_path / "out", "--precision", "fp16", "--no-progress")
    assert result.exit_code == 1 and "has no fp16 model (it has fp32, int8-cpu)" in error_line(result.output)
    assert not (tmp_path / "out" / "masks").exists()


def test_a_second_export_replaces_the_model_set_as_a_whole(artifacts: Path, trained_checkpoint: Path,
                                                          tmp_path: Path) -> None:
    from convseg_deploy.exporters.pipeline import export_artifacts

    art = Path(shutil.copytree(artifacts, tmp_path / "art"))  # fp32 + int8-cpu of an earlier export
    (art / "model.fp16.onnx").write_bytes(b"an even older file, not in any manifest")
    export_artifacts(trained_checkpoint, art, ("fp32",), verify_count=2, log=lambda _m: None)
    assert sorted(p.name for p in art.glob("model.*")) == ["model.fp32.onnx"] and (art / "manifest.json").is_file()
    (aside,) = art.glob("superseded-*")
    assert sorted(p.name for p in aside.iterdir()) == ["manifest.json", "model.fp16.onnx", "model.fp32.onnx",
                                                       "model.int8-cpu.onnx"]
    manifest = make_bundle(art, tmp_path / "b", log=lambda _m: None)
    assert [e["file"] for e in manifest["artifacts"]] == ["model.fp32.onnx"]
    assert sorted(p.name for p in (tmp_path / "b").glob("model.*")) == ["model.fp32.onnx"]
    result = cli("verify", tmp_path / "b")
    assert result.exit_code == 0 and "bundle OK: 1 of 1" in result.output


def test_bundle_refuses_an_export_manifest_without_checksums(artifacts: Path, tmp_path: Path) -> None:
    art = Path(shutil.copytree(artifacts, tmp_path / "art"))
    tamper(art, lambda e: e.pop("sha256"))
    result = cli("bundle", "--artifacts", art, "--out", tmp_path / "b")
    assert result.exit_code == 1 and "the manifest gives no sha256" in error_line(result.output)
    assert not (tmp_path / "b").exists()
