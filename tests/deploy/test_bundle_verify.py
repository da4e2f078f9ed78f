"""bundle -> verify on the exported tiny model: contents, checksums, damage, atomicity, bench numbers."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from convseg_deploy.cli import main
from convseg_deploy.deploy import bundle as bundle_mod
from convseg_deploy.artifacts.names import BUNDLE_FORMAT
from convseg_deploy.deploy.verify import verify_bundle
from convseg_deploy.errors import ConvSegError
from convseg_deploy.fsutil import sha256_file
from convseg_deploy.imaging import read_image, read_mask


def cli(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_bundle_holds_models_checksums_reference_and_usage(bundle_dir: Path, artifacts: Path) -> None:
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    exported = json.loads((artifacts / "manifest.json").read_text())
    assert manifest["format"] == BUNDLE_FORMAT
    assert manifest["preprocess"] == exported["preprocess"] and manifest["threshold"] == exported["threshold"]
    assert sorted(e["file"] for e in manifest["artifacts"]) == sorted(e["file"] for e in exported["artifacts"])
    for entry in manifest["artifacts"]:
        copied = bundle_dir / entry["file"]
        assert entry["size_bytes"] == copied.stat().st_size
        assert entry["sha256"] == next(e["sha256"] for e in exported["artifacts"] if e["file"] == entry["file"])
        assert entry["kind"] == "onnx" and entry["opset"] and entry["input_shapes"]["image"][1:] == [3, 64, 64]
        assert entry["expected"] == f"reference/expected_{entry['precision']}.png"
        assert read_mask(bundle_dir / entry["expected"]).shape == (64, 64)
    assert read_image(bundle_dir / "reference" / "input.png").shape == (64, 64, 3)
    assert {r["file"] for r in manifest["reference"]["files"]} >= {"reference/input.png"}
    usage = (bundle_dir / "USAGE.txt").read_text()
    assert "convseg-deploy verify" in usage and "model.fp32.onnx" in usage
    assert manifest["bench"] is None
    # the reference frame has a polyp the model sees, so the smoke check compares real masks
    assert read_mask(bundle_dir / "reference" / "expected_fp32.png").any()


def test_verify_passes_on_an_intact_bundle(bundle_dir: Path) -> None:
    result = cli("verify", bundle_dir)
    assert result.exit_code == 0, result.output
    header = result.output.splitlines()[0].split()
    assert header == ["file", "checksum", "load", "smoke", "status"]
    assert "model.fp32.onnx" in result.output and "dice 1.0000" in result.output
    assert "bundle OK" in result.output


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_verify_names_a_tampered_model(bundle_copy: Path) -> None:
    _flip_byte(bundle_copy / "model.fp32.onnx")
    result = cli("verify", bundle_copy)
    assert result.exit_code == 1
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("Error: verify failed: model.fp32.onnx (checksum mismatch")
    row = next(line for line in result.output.splitlines() if line.startswith("model.fp32.onnx"))
    assert "mismatch" in row and "FAIL" in row


def test_verify_names_a_truncated_model(bundle_copy: Path) -> None:
    path = bundle_copy / "model.fp32.onnx"
    size = path.stat().st_size
    os.truncate(path, size // 3)
    result = cli("verify", bundle_copy)
    assert result.exit_code == 1
    assert f"model.fp32.onnx (truncated ({size // 3} of {size} bytes)" in result.output


def test_verify_catches_a_damaged_reference_mask(bundle_copy: Path) -> None:
    _flip_byte(bundle_copy / "reference" / "expected_fp32.png")
    verdict = verify_bundle(bundle_copy)
    assert not verdict.ok
    assert any("reference/expected_fp32.png" in p for p in verdict.problems())


def test_verify_rejects_a_folder_without_manifest(tmp_path: Path) -> None:
    result = cli("verify", tmp_path)
    assert result.exit_code == 1 and "no manifest.json" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_verify_wants_a_bundle_not_an_export_folder(artifacts: Path) -> None:
    result = cli("verify", artifacts)
    assert result.exit_code == 1 and "is not a bundle" in result.output


def test_interrupted_bundle_leaves_no_folder(artifacts: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*_args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(bundle_mod, "_expected_masks", boom)
    with pytest.raises(KeyboardInterrupt):
        bundle_mod.make_bundle(artifacts, tmp_path / "b", log=lambda _m: None)
    assert os.listdir(tmp_path) == []  # neither the bundle nor its hidden staging folder


def test_pick_one_precision_with_bench_numbers_joined_by_checksum(artifacts: Path, tmp_path: Path) -> None:
    art = Path(shutil.copytree(artifacts, tmp_path / "art"))
    (art / "bench").mkdir()
    digest = sha256_file(art / "model.fp32.onnx")
    rows = [{"backend": "onnxruntime", "provider": "cpu", "precision": "fp32", "artifact": str(art / "model.fp32.onnx"),
             "sha256": digest, "batch_size": 1, "status": "ok", "fps": 123.4, "e2e_fps": 100.0,
             "latency_ms": {"p50": 8.1}, "dice": 0.9, "agreement": 1.0},
            {"backend": "torch", "provider": "cpu", "precision": "fp32", "artifact": "best.pt", "batch_size": 1,
             "status": "ok", "fps": 50.0},
            # the same name measured before a re-export: another file, so its numbers must not join
            {"backend": "onnxruntime", "provider": "cpu", "precision": "fp32", "artifact": str(art / "model.fp32.onnx"),
             "sha256": "0" * 64, "batch_size": 8, "status": "ok", "fps": 999.0}]
    (art / "bench" / "report.json").write_text(json.dumps({"results": rows}))
    result = cli("bundle", "--artifacts", art, "--pick", "fp32", "--out", tmp_path / "b")
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    (entry,) = manifest["artifacts"]
    assert entry["file"] == "model.fp32.onnx"
    assert entry["bench"] == [{k: v for k, v in rows[0].items() if k not in ("artifact", "sha256")}]
    assert manifest["bench"]["report"].endswith("report.json")


def test_bad_picks_and_outputs_are_one_line_errors(artifacts: Path, tmp_path: Path) -> None:
    result = cli("bundle", "--artifacts", artifacts, "--pick", "fp16", "--out", tmp_path / "b")
    assert result.exit_code == 1 and "no fp16 model" in result.output
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    result = cli("bundle", "--artifacts", artifacts, "--out", tmp_path / "busy")
    assert result.exit_code == 1 and "is not a bundle" in result.output
    assert (tmp_path / "busy" / "notes.txt").read_text() == "mine"


def test_rebundling_replaces_an_old_bundle(artifacts: Path, tmp_path: Path) -> None:
    out = tmp_path / "b"
    bundle_mod.make_bundle(artifacts, out, ["fp32"], log=lambda _m: None)
    bundle_mod.make_bundle(artifacts, out, log=lambda _m: None)
    assert verify_bundle(out).ok


def test_export_manifest_mismatch_stops_the_bundle(artifacts: Path, tmp_path: Path) -> None:
    art = Path(shutil.copytree(artifacts, tmp_path / "art"))
    _flip_byte(art / "model.fp32.onnx")
    with pytest.raises(ConvSegError, match="model.fp32.onnx: checksum mismatch"):
        bundle_mod.make_bundle(art, tmp_path / "b", log=lambda _m: None)


def test_reference_frame_is_deterministic_and_sized() -> None:
    a, b = bundle_mod.reference_frame((64, 96)), bundle_mod.reference_frame((64, 96))
    assert a.shape == (64, 96, 3) and a.dtype == np.uint8 and np.array_equal(a, b)
