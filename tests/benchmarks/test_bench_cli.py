"""``convseg-deploy bench`` end to end on the tiny trained model, with click's CliRunner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from convseg_deploy.cli import main
from tests.benchmarks.conftest import fake_engine
from tests.fakes import install, make_fake_tensorrt
from tests.fakes.onnx_models import tiny_onnx

FAST = ["--iters", "3", "--warmup", "1", "--batch-sizes", "1,4", "--max-images", "8", "--no-progress"]


def bench(*args: str | Path) -> Result:
    return CliRunner().invoke(main, ["bench", *map(str, args), *FAST], catch_exceptions=False)


def rows(report_dir: Path) -> list[dict]:
    return json.loads((report_dir / "report.json").read_text())["results"]


@pytest.fixture
def no_tensorrt(monkeypatch: pytest.MonkeyPatch) -> None:
    install(monkeypatch, None)  # `import tensorrt` fails, as on a machine without it


def test_full_bench_prints_table_and_writes_reports(trained_checkpoint: Path, bench_artifacts: Path, synth_data: Path,
                                                    tmp_path: Path, no_tensorrt: None) -> None:
    engine = fake_engine(tmp_path)
    out = tmp_path / "report"
    res = bench("--checkpoint", trained_checkpoint, "--artifacts", f"{bench_artifacts},{engine}", "--data", synth_data,
                "--threads", "1", "--max-dice-drop", "1", "--min-agreement", "0", "--out", out)
    assert res.exit_code == 0, res.output
    assert "Backend" in res.output and "e2e FPS" in res.output and "Traceback" not in res.output
    for name in ("report.json", "report.csv", "report.md", "fps.png", "dice_vs_fps.png", "roofline.png"):
        assert (out / name).is_file()
    report = json.loads((out / "report.json").read_text())
    assert report["machine"]["threads"] == 1 and report["reference"].startswith("torch/cpu/fp32")
    by = {(r["backend"], r["provider"], r["precision"], r["batch_size"]): r for r in report["results"]}
    for key in [("torch", "cpu", "fp32", 1), ("torch", "cpu", "fp32", 4), ("onnxruntime", "cpu", "fp32", 4),
                ("onnxruntime", "cpu", "int8-cpu", 1)]:
        r = by[key]
        assert r["status"] == "ok", r
        assert r["fps"] == pytest.approx(r["batch_size"] * 1e3 / r["latency_ms"]["mean"])
        assert r["e2e_fps"] > 0 and 0 <= r["dice"] <= 1 and r["agreement"] is not None and r["size_mb"] > 0
        # against the machine's own limit: the work of the ONNX file, the rate it gets, the fraction of the peak
        assert r["gmac_per_frame"] > 0 and r["gmac_per_s"] == pytest.approx(r["gmac_per_frame"] * r["fps"], rel=0.01)
        assert r["efficiency"] == pytest.approx(r["gmac_per_s"] / r["peak_gmac_per_s"], rel=0.01)
    assert report["peak"]["threads"] == 1 and report["peak"]["measured"]["int8"] > 0
    assert by[("torch", "cpu", "fp32", 1)]["dice_drop"] == 0.0
    trt = by[("tensorrt", "tensorrt", "fp16", 1)]
    assert trt["status"] == "skipped" and "TensorRT is not installed" in trt["reason"]
    assert "TensorRT is not installed" in res.output
    assert by[("torch", "cuda", "fp16", 4)]["status"] == "skipped"  # no GPU here


def test_require_tensorrt_fails_naming_the_gate(bench_artifacts: Path, synth_data: Path, no_tensorrt: None) -> None:
    res = bench("--artifacts", bench_artifacts / "model.int8-cpu.onnx", "--data", synth_data, "--providers", "cpu",
                "--require", "tensorrt")
    assert res.exit_code == 1
    assert "FAIL  require tensorrt" in res.output and "gate(s) failed: require tensorrt" in res.output
    assert "Traceback" not in res.output


def test_min_fps_out_of_reach_fails(bench_artifacts: Path, synth_data: Path) -> None:
    res = bench("--artifacts", bench_artifacts / "model.fp32.onnx", "--data", synth_data, "--providers", "cpu",
                "--backends", "onnxruntime", "--min-fps", "1e9")
    assert res.exit_code == 1
    assert "FAIL  min-fps onnxruntime/cpu/fp32 model.fp32.onnx bs1" in res.output


def test_tight_agreement_fails_naming_the_row(bench_artifacts: Path, synth_data: Path) -> None:
    res = bench("--artifacts", bench_artifacts, "--data", synth_data, "--providers", "cpu", "--backends", "onnxruntime",
                "--min-agreement", "1.01")
    assert res.exit_code == 1
    assert "min-agreement onnxruntime/cpu/int8-cpu model.int8-cpu.onnx" in res.output.splitlines()[-1]


def test_images_without_masks_give_speed_only(bench_artifacts: Path, images_only: Path, tmp_path: Path) -> None:
    # agreement is still gated without ground truth; this test is about the missing masks only
    res = bench("--artifacts", bench_artifacts, "--data", images_only, "--providers", "cpu", "--backends", "onnxruntime",
                "--min-agreement", "0", "--out", tmp_path)
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["accuracy"]["available"] is False and "no ground-truth masks" in report["accuracy"]["reason"]
    for r in report["results"]:
        assert r["status"] == "ok" and r["dice"] is None and r["dice_drop"] is None and r["fps"] > 0
        assert r["agreement"] is not None  # masks of two backends compare without ground truth
    assert "accuracy unavailable" in res.output


def test_corrupt_onnx_fails_its_row_only(bench_artifacts: Path, synth_data: Path, tmp_path: Path) -> None:
    broken = tmp_path / "model.fp16.onnx"
    broken.write_bytes(b"\x08\x07 this is not protobuf" * 10)
    res = bench("--artifacts", f"{bench_artifacts / 'model.fp32.onnx'},{broken}", "--data", synth_data,
                "--providers", "cpu", "--backends", "onnxruntime", "--out", tmp_path / "r")
    assert res.exit_code == 1, res.output  # the other rows ran, but a broken model makes the run red
    assert "no-failed-rows" in res.output
    assert "Traceback" not in res.output
    results = rows(tmp_path / "r")
    assert [r["status"] for r in results] == ["ok", "ok", "failed", "failed"]
    reason = results[2]["reason"]
    assert "model.fp16.onnx" in reason and "\n" not in reason and len(reason) <= 300


def test_engine_batch_above_profile_is_a_skipped_row_with_the_fix(synth_data: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from convseg_deploy.exporters.tensorrt_builder import build_engine

    install(monkeypatch, make_fake_tensorrt("10.13.0"))
    onnx_file = tiny_onnx(tmp_path / "model.fp16.onnx")
    build_engine(onnx_file, max_batch=4)
    res = CliRunner().invoke(main, ["bench", "--artifacts", str(onnx_file.with_suffix(".engine")), "--data", str(synth_data),
                                    "--backends", "tensorrt", "--batch-sizes", "1,8", "--iters", "2", "--warmup", "1",
                                    "--max-images", "4", "--no-progress", "--out", str(tmp_path / "r")])
    results = rows(tmp_path / "r")
    assert [(r["batch_size"], r["status"]) for r in results] == [(1, "ok"), (8, "skipped")], res.output
    assert res.exit_code == 0, res.output
    assert results[1]["reason"] == "batch 8 exceeds the model's largest batch (4): rebuild with --max-batch 8"
    assert results[0]["precision"] == "fp16" and results[0]["provider"] == "tensorrt"


def test_usage_errors_are_one_line(synth_data: Path) -> None:
    res = CliRunner().invoke(main, ["bench", "--data", str(synth_data)])
    assert res.exit_code == 2 and "give --checkpoint, --artifacts or both" in res.output
    res = CliRunner().invoke(main, ["bench", "--data", str(synth_data), "--artifacts", "nowhere.onnx"])
    assert res.exit_code == 1 and res.output.strip() == "Error: artifact nowhere.onnx not found"
    res = CliRunner().invoke(main, ["bench", "--data", str(synth_data), "--artifacts", "x.onnx", "--batch-sizes", "1,a"])
    assert res.exit_code == 2 and "comma list of integers" in res.output


def test_checkpoint_runs_at_the_size_the_artifacts_were_exported_at(trained_checkpoint: Path, synth_data: Path,
                                                                     tmp_path: Path) -> None:
    """A 64x64 checkpoint exported at 96x96: the PyTorch reference must run at 96x96 too, or the
    speed ratios compare different work and the agreement cannot be checked."""
    from convseg_deploy.exporters.pipeline import export_artifacts

    export_artifacts(trained_checkpoint, tmp_path / "x96", ("fp32",), image_size=(96, 96), verify_count=2,
                     log=lambda _m: None)
    out = tmp_path / "report"
    res = bench("--checkpoint", trained_checkpoint, "--artifacts", tmp_path / "x96", "--data", synth_data,
                "--backends", "torch,onnxruntime", "--providers", "cpu", "--threads", "1", "--out", out)
    assert res.exit_code == 0, res.output
    by = {(r["backend"], r["batch_size"]): r for r in rows(out) if r["precision"] == "fp32"}  # not torch bf16
    assert by[("torch", 1)]["input_size"] == [96, 96] == by[("onnxruntime", 1)]["input_size"]
    assert by[("onnxruntime", 1)]["agreement"] > 0.99  # same size, so parity is checked (FP32 vs FP32)
    assert "runs at 96x96 (the checkpoint's own size is 64x64)" in res.output
    # an explicit size wins, and a bad one is a one-line error
    res = bench("--checkpoint", trained_checkpoint, "--data", synth_data, "--backends", "torch", "--image-size", "72", "64")
    assert res.exit_code == 1 and "72x64" in res.output and "Traceback" not in res.output
