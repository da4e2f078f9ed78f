"""``convseg-deploy holoscan``: the generated application's yaml and graph against the installed
Holoscan wheel, the application run for real on CPU (masks equal predict's on the same decoded
frames, latency from Holoscan's Tracker in live's summary), and the refusals."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from convseg_deploy.cli import main
from convseg_deploy.holoscan.config import MASKS_FOLDER, OPERATOR_SECTIONS, OURS, mask_name
from convseg_deploy.live.records import FRAME_KEYS, SUMMARY_KEYS

ROOT = Path(__file__).resolve().parents[2]
HAVE_HOLOSCAN = importlib.util.find_spec("holoscan") is not None
needs_holoscan = pytest.mark.skipif(not HAVE_HOLOSCAN, reason="the holoscan-cu12 wheel is not installed (make install "
                                                                "installs the [holoscan] extra)")
CHILD_ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
FRAMES = 8


def cli(*args: object):
    return CliRunner().invoke(main, [str(a) for a in args])


def run_app(app: Path, *args: object, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(app / "app.py"), *map(str, args)], capture_output=True, text=True,
                          env=CHILD_ENV, timeout=timeout)


@pytest.fixture(scope="module")
def app(framework_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("holoscan") / "app"
    result = cli("holoscan", "--model", framework_bundle, "--out", out)
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def wheel() -> dict:
    done = subprocess.run([sys.executable, str(ROOT / "tests/holoscan/wheel_api.py")], capture_output=True, text=True,
                          env=CHILD_ENV, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from convseg_deploy.synth import write_video

    return write_video(tmp_path_factory.mktemp("clip") / "clip.mp4", count=FRAMES, size=64, seed=11, fps=30)


def test_writes_the_three_files_for_the_holoscan_variant(app: Path, framework_bundle: Path) -> None:
    assert sorted(p.name for p in app.iterdir()) == ["README.md", "app.py", "app.yaml"]
    config = yaml.safe_load((app / "app.yaml").read_text())
    ours = config[OURS]
    assert Path(ours["bundle"]) == framework_bundle.resolve()
    assert ours["model_size"] == [64, 64] and ours["threshold"] == 0.5
    # no engine in this bundle: ONNX Runtime inside InferenceOp, on the FP16 holoscan variant
    assert config["inference"]["backend"] == "onnxrt" and config["inference"]["is_engine_path"] is False
    assert config["inference"]["model_path_map"] == {"convseg": str(framework_bundle.resolve() / "holoscan.fp16.onnx")}
    assert config["inference"]["inference_map"] == {"convseg": ["probability", "logits"]}
    assert config["postprocessor"]["in_tensor_name"] == "probability"
    assert config["preprocessor"]["out_tensor_name"] == config["inference"]["pre_processor_map"]["convseg"][0]
    assert os.access(app / "app.py", os.X_OK)
    assert "python app.py --source SRC --out DIR" in (app / "README.md").read_text()


@needs_holoscan
def test_yaml_keys_are_the_operators_own_parameters(app: Path, wheel: dict) -> None:
    config = yaml.safe_load((app / "app.yaml").read_text())
    assert set(config) == {OURS, *OPERATOR_SECTIONS}
    for section, op in OPERATOR_SECTIONS.items():
        documented = set(wheel["documented"][op]["params"])
        assert set(config[section]) <= documented, (section, op, set(config[section]) - documented)
        if op in wheel["registered"]:  # the operators that load here: what their spec registers
            assert set(config[section]) <= set(wheel["registered"][op]), (section, op)


@needs_holoscan
def test_yaml_values_are_ones_the_operators_take(app: Path, wheel: dict) -> None:
    config = yaml.safe_load((app / "app.yaml").read_text())
    docs = {op: wheel["documented"][op]["doc"] for op in wheel["documented"]}
    for section in ("preprocessor", "rgba_to_rgb"):
        for key in ("in_dtype", "out_dtype"):
            assert f'``"{config[section][key]}"``' in docs["FormatConverterOp"], (section, key)
    assert f'"{config["inference"]["backend"]}"' in docs["InferenceOp"].split("backend : ")[1].split("\n")[0]
    strings = wheel["documented"]["SegmentationPostprocessorOp"]["library_strings"]
    assert config["postprocessor"]["network_output_type"] in strings and config["postprocessor"]["data_format"] in strings
    for entry in config["holoviz"]["tensors"]:
        assert all(f"**{key}**" in docs["HolovizOp"] for key in entry), entry
        assert f"**{entry['type']}**" in docs["HolovizOp"]
    assert f'``"{config["v4l2"]["pixel_format"]}"``' in docs["V4L2VideoCaptureOp"]


@needs_holoscan
@pytest.mark.parametrize("source", ["frames", "replayer", "rgba_to_rgb"])
def test_gpu_graph_ports_exist_on_the_operators(source: str, wheel: dict) -> None:
    from convseg_deploy.holoscan.gpu_graph import source_flows

    ours = {"frames": {"outputs": ["frame"]}, "writer": {"inputs": ["in"]}}
    ports = {section: wheel["documented"][op] for section, op in OPERATOR_SECTIONS.items()} | ours
    flows = source_flows(source)
    for start, out_port, end, in_port in flows:
        assert out_port in ports[start]["outputs"], (start, out_port)
        assert in_port in ports[end]["inputs"], (end, in_port)
    assert ("postprocessor", "out_tensor", "holoviz", "receivers") in flows


@needs_holoscan
@pytest.mark.parametrize("kind", ["file", "replayer", "v4l2"])
def test_gpu_graph_composes_with_the_documented_operators(kind: str, app: Path, clip: Path, recording: Path,
                                                          tmp_path: Path) -> None:
    """compose_gpu run for real up to the composed graph: the SDK's resources and the operators that
    load here, stand-ins with the documented ports and parameters for those that do not."""
    from convseg_deploy.holoscan.gpu_graph import source_flows

    spec, section = {"file": (str(clip), "frames"), "replayer": (f"replayer:{recording}", "replayer"),
                     "v4l2": ("/dev/video0", "rgba_to_rgb")}[kind]
    done = subprocess.run([sys.executable, str(ROOT / "tests/holoscan/compose_gpu_check.py"), str(app), spec,
                           str(tmp_path / "out")], capture_output=True, text=True, env=CHILD_ENV, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    composed = {(a, b, c, d.split(":")[0]) for a, b, c, d in json.loads(done.stdout)}
    assert composed == set(source_flows(section))


@pytest.fixture(scope="module")
def predicted(framework_bundle: Path, clip: Path, tmp_path_factory: pytest.TempPathFactory) -> list[np.ndarray]:
    """predict's masks of the clip's frames, decoded by our FFmpeg source as the application reads
    them and given to predict as PNG files (lossless), with the backend and file the app runs."""
    from convseg_deploy.deploy.render import write_png
    from convseg_deploy.imaging import read_mask
    from convseg_deploy.live.sources import open_source

    root = tmp_path_factory.mktemp("predicted")
    source = open_source(str(clip))
    source.open(5.0)
    count = 0
    while (frame := source.read()) is not None:
        write_png(root / "frames" / mask_name(count), frame.image)
        count += 1
    source.close()
    assert count == FRAMES
    result = cli("predict", "--model", framework_bundle, root / "frames", "--out", root / "predict", "--backend",
                 "onnxruntime", "--precision", "fp32", "--batch-size", "1", "--no-progress")
    assert result.exit_code == 0, result.output
    masks = [read_mask(root / "predict" / "masks" / mask_name(i)) for i in range(FRAMES)]
    assert any(m.any() for m in masks) and not all(m.all() for m in masks)  # the masks say something
    return masks


def agreement(out: Path, expected: list[np.ndarray]) -> float:
    from convseg_deploy.imaging import read_mask

    ours = [read_mask(out / MASKS_FOLDER / mask_name(i)) for i in range(len(expected))]
    return float(np.mean([np.mean(a == b) for a, b in zip(ours, expected)]))


def check_tracked_run(out: Path, path: str) -> dict:
    """summary.json of an every-frame CPU run of the clip: live's keys, every frame inferred and
    written, latency from Holoscan's Tracker (its log's values against its own metrics)."""
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary)[: len(SUMMARY_KEYS)] == list(SUMMARY_KEYS)
    assert summary["complete"] and summary["ended_by"] == "end_of_stream" and summary["mode"] == "every_frame"
    assert summary["frames_in"] == summary["frames_inferred"] == summary["frames_out"] == FRAMES
    assert summary["frames_skipped"] == 0 and summary["path"] == "cpu" and summary["backend"] == "onnxruntime"
    assert Path(summary["model"]).name == "model.fp32.onnx"
    (tracked, metrics), = summary["holoscan_tracker"].items()
    assert tracked == path and metrics["messages"] == FRAMES
    assert summary["latency_ms"]["max"] == pytest.approx(metrics["max_ms"], abs=0.01)
    assert 0 < metrics["min_ms"] <= summary["latency_ms"]["p50"] <= metrics["max_ms"]
    assert "Tracker" in summary["latency_from"]
    records = [json.loads(line) for line in (out / "frames.jsonl").read_text().splitlines()]
    assert [r["index"] for r in records] == list(range(FRAMES)) and all(list(r) == list(FRAME_KEYS) for r in records)
    assert sorted(p.name for p in out.rglob(".*")) == []
    return summary


@needs_holoscan
def test_app_runs_on_cpu_and_its_masks_equal_predicts(app: Path, clip: Path, predicted: list[np.ndarray],
                                                      tmp_path: Path) -> None:
    out = tmp_path / "run"
    done = run_app(app, "--source", clip, "--out", out, "--backend", "onnxruntime", "--precision", "fp32")
    assert done.returncode == 0, done.stderr[-3000:]
    check_tracked_run(out, "frames,segment,writer")
    assert agreement(out, predicted) == 1.0


@pytest.fixture(scope="module")
def recording(clip: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The clip's decoded frames as a GXF recording (VideoStreamRecorderOp), basename "video"."""
    folder = tmp_path_factory.mktemp("recording")
    done = subprocess.run([sys.executable, str(ROOT / "tests/holoscan/record_gxf.py"), str(clip), str(folder),
                           "video"], capture_output=True, text=True, env=CHILD_ENV, timeout=300)
    assert done.returncode == 0 and done.stdout.split()[-1] == str(FRAMES), done.stderr[-2000:]
    return folder


@needs_holoscan
def test_replayer_source_runs_a_gxf_recording(app: Path, recording: Path, predicted: list[np.ndarray],
                                              tmp_path: Path) -> None:
    out = tmp_path / "run"
    done = run_app(app, "--source", f"replayer:{recording}", "--out", out, "--backend", "onnxruntime",
                   "--precision", "fp32")
    assert done.returncode == 0, done.stderr[-3000:]
    summary = check_tracked_run(out, "replayer,frames,segment,writer")
    assert summary["source_kind"] == "replayer"
    assert agreement(out, predicted) == 1.0
    missing = run_app(app, "--source", f"replayer:{tmp_path}", "--out", tmp_path / "run2", "--path", "cpu")
    assert missing.returncode == 1 and "no video.gxf_index" in missing.stderr and "Traceback" not in missing.stderr


@needs_holoscan
def test_realtime_keeps_the_newest_frame_and_counts_add_up(app: Path, clip: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    done = run_app(app, "--source", clip, "--out", out, "--realtime", "--max-frames", 5, "--backend", "onnxruntime")
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["mode"] == "newest_frame" and summary["ended_by"] == "max_frames" and summary["frames_in"] == 5
    assert summary["frames_inferred"] + summary["frames_skipped"] == summary["frames_in"]
    assert summary["frames_out"] == summary["frames_inferred"] >= 1
    (metrics,) = summary["holoscan_tracker"].values()
    assert metrics["messages"] == summary["frames_out"]
    assert len(list((out / MASKS_FOLDER).iterdir())) == summary["frames_out"]


@needs_holoscan
def test_app_bad_source_is_one_line_and_a_summary(app: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    done = run_app(app, "--source", tmp_path / "missing.mp4", "--out", out, "--path", "cpu")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("Error: --source") and "missing.mp4" in done.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["ended_by"] == "error" and "missing.mp4" in summary["error"]
    assert sorted(p.name for p in out.iterdir()) == ["summary.json"]
    again = run_app(app, "--source", tmp_path / "missing.mp4", "--out", out, "--path", "cpu")
    assert again.returncode == 1 and "holds another run's outputs" in again.stderr


@needs_holoscan
def test_gpu_path_names_the_operator_that_cannot_load(app: Path, clip: Path, tmp_path: Path) -> None:
    from convseg_deploy.hardware.gpu import gpu_expected

    if gpu_expected():
        pytest.skip("this machine has an NVIDIA driver: the GPU path may load here")
    done = run_app(app, "--source", clip, "--out", tmp_path / "run", "--path", "gpu")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "cannot be loaded on this machine" in done.stderr and "--path cpu" in done.stderr


def test_refuses_a_missing_bundle(tmp_path: Path) -> None:
    result = cli("holoscan", "--model", tmp_path / "nothing", "--out", tmp_path / "app")
    assert result.exit_code == 1 and "is not a bundle folder" in result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "app").exists()


def test_refuses_a_bundle_without_the_holoscan_variant(bundle_dir: Path, tmp_path: Path) -> None:
    result = cli("holoscan", "--model", bundle_dir, "--out", tmp_path / "app")
    assert result.exit_code == 1 and "no Holoscan variant" in result.output
    assert "--io tensor,holoscan" in result.output and "convseg-deploy bundle" in result.output
    assert not (tmp_path / "app").exists()


def test_refuses_an_existing_non_empty_out(framework_bundle: Path, tmp_path: Path) -> None:
    out = tmp_path / "app"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    result = cli("holoscan", "--model", framework_bundle, "--out", out)
    assert result.exit_code == 1 and "exists and is not empty" in result.output
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


def test_refuses_a_threshold_the_postprocessor_cannot_apply(framework_bundle: Path, tmp_path: Path) -> None:
    import shutil

    bundle = Path(shutil.copytree(framework_bundle, tmp_path / "bundle"))
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["threshold"] = 0.3
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    result = cli("holoscan", "--model", bundle, "--out", tmp_path / "app")
    assert result.exit_code == 1 and "thresholds the probability at 0.5" in result.output


def test_refuses_a_damaged_variant(framework_bundle: Path, tmp_path: Path) -> None:
    import shutil

    bundle = Path(shutil.copytree(framework_bundle, tmp_path / "bundle"))
    with open(bundle / "holoscan.fp32.onnx", "ab") as handle:
        handle.write(b"x")
    result = cli("holoscan", "--model", bundle, "--out", tmp_path / "app", "--precision", "fp32")
    assert result.exit_code == 1 and "holoscan.fp32.onnx" in result.output and "verify" in result.output
    assert not (tmp_path / "app").exists()


@needs_holoscan
def test_ctrl_c_ends_the_run_as_interrupt_with_its_records(app: Path, tmp_path: Path) -> None:
    import signal
    import time

    from convseg_deploy.synth import write_video

    clip = write_video(tmp_path / "long.mp4", count=150, size=64, seed=3, fps=30)  # 5 s played in real time
    out = tmp_path / "run"
    child = subprocess.Popen([sys.executable, str(app / "app.py"), "--source", str(clip), "--out", str(out),
                              "--realtime", "--backend", "onnxruntime"], env=CHILD_ENV, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(600):  # until the first mask is written (the graph runs), at most a minute
            if child.poll() is not None or any((out / MASKS_FOLDER).glob("*.png")):
                break
            time.sleep(0.1)
        assert child.poll() is None, "the run ended before it could be interrupted"
        child.send_signal(signal.SIGINT)
        _, stderr = child.communicate(timeout=120)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 130, stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["complete"] and summary["ended_by"] == "interrupt" and 0 < summary["frames_in"] < 150
    assert len((out / "frames.jsonl").read_text().splitlines()) == summary["frames_out"] >= 1


def test_an_engine_built_on_the_device_goes_to_inference_op_with_trt(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from convseg_deploy.deploy.bundle import make_bundle
    from convseg_deploy.exporters.frames_io import wrap_frames
    from tests.fakes import install, make_fake_tensorrt
    from tests.fakes.onnx_models import mean_onnx

    art = tmp_path / "art"
    art.mkdir()
    mean_onnx(art / "model.fp16.onnx")
    wrap_frames(art / "model.fp16.onnx", art / "holoscan.fp16.onnx", io="holoscan")
    bundle = tmp_path / "bundle"
    make_bundle(art, bundle, log=lambda _m: None)
    install(monkeypatch, make_fake_tensorrt("10.13.0"))  # the strict TensorRT double, as on the device
    result = cli("build-engine", "--bundle", bundle, "--precision", "fp16", "--io", "holoscan")
    assert result.exit_code == 0, result.output
    result = cli("holoscan", "--model", bundle, "--out", tmp_path / "app")
    assert result.exit_code == 0, result.output
    config = yaml.safe_load((tmp_path / "app" / "app.yaml").read_text())
    assert config["inference"]["backend"] == "trt" and config["inference"]["is_engine_path"] is True
    assert config["inference"]["model_path_map"] == {"convseg": str(bundle.resolve() / "holoscan.fp16.engine")}
    assert "build-engine --bundle BUNDLE --precision fp16 --io holoscan" in (tmp_path / "app" / "README.md").read_text()
