"""``convseg-deploy deepstream``: every key against DeepStream's documented table, the values against
the model, the configs through GLib's key-file parser and the pipeline through GStreamer's own
parser, and the refusals of what DeepStream cannot run correctly."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from convseg_deploy.cli import main
from convseg_deploy.deploy import deepstream_files as files
from tests.deploy.deepstream_keys import APP_KEYS, NVINFER_KEYS, app_group

HERE = Path(__file__).resolve().parent
SYSTEM_PYTHON = "/usr/bin/python3"  # Debian's, with python3-gi (the venv cannot import gi)
GST_LAUNCH = shutil.which("gst-launch-1.0")


def cli(*args: object):
    return CliRunner().invoke(main, [str(a) for a in args])


def _system_has(code: str) -> bool:
    if not Path(SYSTEM_PYTHON).is_file():
        return False
    return subprocess.run([SYSTEM_PYTHON, "-c", code], capture_output=True, timeout=60).returncode == 0


HAVE_GLIB = _system_has("from gi.repository import GLib")
HAVE_GST = GST_LAUNCH is not None and _system_has("import gi; gi.require_version('Gst', '1.0'); from gi.repository import Gst")
needs_glib = pytest.mark.skipif(not HAVE_GLIB, reason="python3-gi is not installed (make test installs it)")
needs_gst = pytest.mark.skipif(not HAVE_GST, reason="GStreamer and its Python bindings are not installed (make test "
                                                    "installs gstreamer1.0-tools, -plugins-good/-bad, gir1.2-gstreamer-1.0)")


def system_check(*args: str) -> dict:
    done = subprocess.run([SYSTEM_PYTHON, str(HERE / "gst_glib_check.py"), *args], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def ini(path: Path) -> dict[str, dict[str, str]]:
    """The groups of a key file as written (the values are checked with GLib's parser separately)."""
    groups: dict[str, dict[str, str]] = {}
    current = None
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            current = groups.setdefault(line.strip("[]"), {})
            continue
        key, value = line.split("=", 1)
        assert current is not None and key not in current, f"{path}: {key} outside a group or twice"
        current[key] = value
    return groups


def typed(getter: str, value: str):
    return {"integer": int, "double": float, "string": str, "boolean": lambda v: {"1": True, "0": False,
            "true": True, "false": False}[v], "integer_list": lambda v: [int(x) for x in v.split(";") if x],
            "double_list": lambda v: [float(x) for x in v.split(";") if x],
            "string_list": lambda v: [x for x in v.split(";") if x]}[getter](value)


@pytest.fixture(scope="module")
def ds_fp16(framework_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("deepstream") / "fp16"
    result = cli("deepstream", "--model", framework_bundle, "--out", out)
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def ds_fp32(framework_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("deepstream") / "fp32"
    assert cli("deepstream", "--model", framework_bundle, "--out", out, "--precision", "fp32").exit_code == 0
    return out


@pytest.fixture(scope="module")
def verification_frames(synth_data: Path) -> np.ndarray:
    """The export's own verification frames (framework_export: 16 calibration frames, 8 verification)."""
    from convseg_deploy.exporters.calibration import load_frames

    return load_frames(synth_data, (64, 64), calib_count=16, calib_batch=1, verify_count=8, need_calibration=True).verify


def test_every_generated_key_is_in_deepstreams_documented_tables(ds_fp16: Path) -> None:
    nvinfer = ini(ds_fp16 / "nvinfer_config.txt")
    assert list(nvinfer) == ["property"]
    for key, value in nvinfer["property"].items():
        assert key in NVINFER_KEYS, f"nvinfer does not document the key {key!r}"
        getter, accepts = NVINFER_KEYS[key]
        assert accepts(typed(getter, value)), f"nvinfer refuses {key}={value}"
    app = ini(ds_fp16 / "deepstream_app_config.txt")
    for group, keys in app.items():
        assert app_group(group) in APP_KEYS, f"deepstream-app has no group [{group}]"
        assert set(keys) <= APP_KEYS[app_group(group)], f"[{group}]: {set(keys) - APP_KEYS[app_group(group)]}"
    assert app["primary-gie"]["config-file"] == "nvinfer_config.txt"


def test_the_config_covers_what_segmentation_needs(ds_fp16: Path, framework_bundle: Path) -> None:
    prop = ini(ds_fp16 / "nvinfer_config.txt")["property"]
    manifest = json.loads((framework_bundle / "manifest.json").read_text())
    assert prop["network-type"] == "2" and prop["num-detected-classes"] == "1"
    assert prop["output-blob-names"] == "probability" and prop["segmentation-output-order"] == "0"
    assert float(prop["segmentation-threshold"]) == manifest["threshold"] and 0 < manifest["threshold"] < 1
    assert prop["model-color-format"] == "0" and prop["network-input-order"] == "0"
    assert prop["infer-dims"] == "3;64;64" and prop["network-mode"] == "2"  # the fp16 file, no engine yet
    assert prop["onnx-file"] == "deepstream.fp16.onnx" and "model-engine-file" not in prop
    assert (ds_fp16 / "deepstream.fp16.onnx").read_bytes() == (framework_bundle / "deepstream.fp16.onnx").read_bytes()
    assert os.access(ds_fp16 / "run_gst.sh", os.X_OK)


@needs_glib
def test_glib_reads_the_configs_as_nvinfer_and_deepstream_app_do(ds_fp16: Path) -> None:
    """The same GKeyFile getters nvinfer's parser calls, on the written file."""
    prop = ini(ds_fp16 / "nvinfer_config.txt")["property"]
    specs = [f"property:{key}:{NVINFER_KEYS[key][0]}" for key in prop]
    values = system_check("keyfile", str(ds_fp16 / "nvinfer_config.txt"), *specs)
    assert "error" not in values, values
    for key, raw in prop.items():
        getter, accepts = NVINFER_KEYS[key]
        read = values[f"property:{key}"]
        assert read == pytest.approx(typed(getter, raw)) and accepts(read), (key, raw, read)
    app = system_check("groups", str(ds_fp16 / "deepstream_app_config.txt"))
    assert app == {g: list(k) for g, k in ini(ds_fp16 / "deepstream_app_config.txt").items()}


def _nvinfer_run(out: Path, frames: np.ndarray) -> tuple[np.ndarray, float]:
    """What nvinfer does with ``out``'s config, done in numpy: y = net-scale-factor * (x - offsets[c])
    planar in model-color-format's order, then the named file (ONNX Runtime) and its named output
    thresholded at segmentation-threshold."""
    import onnx
    import onnxruntime as ort

    prop = ini(out / "nvinfer_config.txt")["property"]
    scale = np.float32(float(prop["net-scale-factor"]))
    offsets = np.asarray([float(v) for v in prop["offsets"].split(";")], np.float32)
    channels, height, width = (int(v) for v in prop["infer-dims"].split(";"))
    assert frames.shape[1:] == (height, width, channels) and prop["model-color-format"] == "0"  # RGB as decoded
    planar = (scale * (frames.astype(np.float32) - offsets)).transpose(0, 3, 1, 2)
    model = onnx.load(str(out / prop["onnx-file"]))
    (name,) = [i.name for i in model.graph.input]
    (output,) = prop["output-blob-names"].split(";")
    assert [o.name for o in model.graph.output][0] == output  # nvinfer segments its first output layer
    assert next(n.op_type for n in model.graph.node if output in n.output) == "Sigmoid"
    (probability,) = ort.InferenceSession(str(out / prop["onnx-file"]), providers=["CPUExecutionProvider"]).run(
        [output], {name: planar})
    assert probability.min() >= 0 and probability.max() <= 1
    return probability[:, 0], float(prop["segmentation-threshold"])


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_scale_and_offsets_applied_in_numpy_agree_with_onnx_runtime_fp32(
        request: pytest.FixtureRequest, framework_bundle: Path, verification_frames: np.ndarray, precision: str) -> None:
    from convseg_deploy.artifacts.onnx_meta import preprocess_from_metadata, read_metadata
    from convseg_deploy.imaging import logits_to_masks, preprocess
    from convseg_deploy.metrics import mean_dice
    from convseg_deploy.ort_session import cpu_session

    out = request.getfixturevalue(f"ds_{precision}")
    probability, threshold = _nvinfer_run(out, verification_frames)
    fp32 = framework_bundle / "model.fp32.onnx"
    spec, fp32_threshold = preprocess_from_metadata(read_metadata(fp32))
    (logits,) = cpu_session(fp32, None).run(["logits"], {"image": preprocess(verification_frames, spec)})
    assert threshold == fp32_threshold
    assert mean_dice(probability > threshold, logits_to_masks(logits, threshold)) >= 0.999


def test_int8_points_at_the_engine_built_on_the_device(framework_bundle: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.fakes import install, make_fake_tensorrt

    bundle = Path(shutil.copytree(framework_bundle, tmp_path / "bundle"))
    result = cli("deepstream", "--model", bundle, "--out", tmp_path / "refused", "--precision", "int8")
    assert result.exit_code == 1 and not (tmp_path / "refused").exists()
    assert "INT8 (Q/DQ) reaches DeepStream only as an engine built on the device" in result.output
    assert f"run 'convseg-deploy build-engine --bundle {bundle} --precision int8 --io deepstream'" in result.output
    install(monkeypatch, make_fake_tensorrt("10.13.0"))
    assert cli("build-engine", "--bundle", bundle, "--precision", "int8", "--io", "deepstream").exit_code == 0
    out = tmp_path / "ds"
    result = cli("deepstream", "--model", bundle, "--out", out)  # int8 first once its engine is there
    assert result.exit_code == 0, result.output
    prop = ini(out / "nvinfer_config.txt")["property"]
    assert prop["network-mode"] == "1" and "onnx-file" not in prop and "int8-calib-file" not in prop
    assert (out / prop["model-engine-file"]).resolve() == (bundle / "deepstream.int8.engine").resolve()
    assert not list(out.glob("*.onnx"))
    assert cli("verify", bundle).exit_code == 0  # nothing of DeepStream's landed in the bundle


def test_what_deepstream_cannot_run_correctly_is_refused(framework_bundle: Path, bundle_dir: Path,
                                                         tmp_path: Path) -> None:
    result = cli("deepstream", "--model", bundle_dir, "--out", tmp_path / "a")
    assert result.exit_code == 1 and "has no DeepStream variant" in result.output
    assert "those output logits, which nvinfer would threshold as probabilities" in result.output
    result = cli("deepstream", "--model", framework_bundle / "model.fp16.onnx", "--out", tmp_path / "b")
    assert result.exit_code == 1 and "is not a bundle folder" in result.output
    result = cli("deepstream", "--model", framework_bundle, "--out", tmp_path / "c", "--precision", "int8-cpu")
    assert result.exit_code == 1 and "int8-cpu is ONNX Runtime's CPU quantization" in result.output
    bundle = Path(shutil.copytree(framework_bundle, tmp_path / "bundle"))
    with open(bundle / "deepstream.fp16.onnx", "ab") as fh:
        fh.write(b"x")
    result = cli("deepstream", "--model", bundle, "--out", tmp_path / "d")
    assert result.exit_code == 1 and "deepstream.fp16.onnx: size differs" in result.output
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "keep.txt").write_text("x")
    result = cli("deepstream", "--model", framework_bundle, "--out", tmp_path / "e")
    assert result.exit_code == 1 and "exists and is not empty" in result.output
    assert not any((tmp_path / name).exists() for name in "abcd")  # nothing half-written
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")] and os.listdir(tmp_path / "e") == ["keep.txt"]


def _stand_ins(description: str) -> str:
    """``description`` with each NVIDIA element (and its properties, which only it knows) replaced by
    a standard element with the same pads, so that GStreamer can check everything else."""
    segments = []
    for segment in description.split(" ! "):
        tokens = segment.split()
        at = next((i for i, t in enumerate(tokens) if t in files.NVIDIA_ELEMENTS), None)
        if at is not None:
            name = [t for t in tokens[at + 1:] if t.startswith("name=")]
            stand_in = {"nvstreammux": "funnel", "nveglglessink": "fakesink", "nv3dsink": "fakesink"}.get(tokens[at],
                                                                                                         "identity")
            tokens = tokens[:at] + [stand_in, *name]
        segments.append(" ".join(tokens))
    return " ! ".join(segments)


@needs_gst
def test_gstreamers_own_parser_fails_only_on_nvidias_elements(ds_fp16: Path, tmp_path: Path) -> None:
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"\0" * 64)
    env = {**os.environ, "SINK": "fakesink"}
    done = subprocess.run([str(ds_fp16 / "run_gst.sh"), str(video)], capture_output=True, text=True, timeout=60, env=env)
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    assert done.returncode == 1 and lines == ['WARNING: erroneous pipeline: no element "nvv4l2decoder"'], lines
    # the exact arguments run_gst.sh hands gst-launch-1.0, through GStreamer's parser without running them
    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "gst-launch-1.0").write_text(f'#!/bin/sh\nprintf "%s\\0" "$@" > "{tmp_path}/argv"\n')
    (shim / "gst-launch-1.0").chmod(0o755)
    subprocess.run([str(ds_fp16 / "run_gst.sh"), str(video)], check=True, timeout=60,
                   env={**env, "PATH": f"{shim}:{os.environ['PATH']}"})
    args = (tmp_path / "argv").read_text().split("\0")[:-1]
    assert args[0] == "-e"
    description = " ".join(args[1:])  # what gst-launch-1.0 does with its arguments
    parsed = system_check("parse", description)
    assert parsed["error"] == 'no element "nvv4l2decoder"' and set(parsed["missing"]) <= set(files.NVIDIA_ELEMENTS)
    assert {"nvv4l2decoder"} <= set(parsed["missing"])
    standing_in = system_check("parse", _stand_ins(description))
    assert standing_in == {"error": None, "code": None, "missing": []}, standing_in
    # a control: a mistake outside NVIDIA's elements is caught by the same check
    broken = system_check("parse", _stand_ins(description.replace("qtdemux", "qtdemux nosuch=1")))
    assert broken["error"] == 'no property "nosuch" in element "qtdemux"'


def test_the_probe_reads_nvinfers_masks_with_the_same_pipeline(ds_fp16: Path, tmp_path: Path) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("written_probe", ds_fp16 / "probe.py")
    probe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(probe)
    assert probe.PIPELINE == files.pipeline("{video}", "{config}", 1920, 1080, "{sink}")
    assert f"name={probe.INFER_NAME} " in probe.PIPELINE
    class_map = np.array([[0, -1], [-1, 0]], np.int32)  # nvinfer: 0 where probability > threshold, else -1
    assert probe.mask_from_class_map(class_map).tolist() == [[255, 0], [0, 255]]
    line = next(line for line in (ds_fp16 / "run_gst.sh").read_text().splitlines() if line.startswith("exec "))
    assert line == "exec gst-launch-1.0 -e " + probe.PIPELINE.format(video='"$VIDEO"', config='"$HERE/nvinfer_config.txt"',
                                                                     sink='"$SINK"')
    python = SYSTEM_PYTHON if Path(SYSTEM_PYTHON).is_file() else sys.executable
    done = subprocess.run([python, str(ds_fp16 / "probe.py"), str(tmp_path / "v.mp4"), "--out", str(tmp_path / "m")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and done.stderr.count("\n") == 1
    assert "the DeepStream Python bindings (pyds)" in done.stderr and not (tmp_path / "m").exists()
