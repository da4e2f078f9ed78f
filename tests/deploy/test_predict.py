"""predict on images, folders, globs and video; outputs, summaries, bad input, bounded memory, no torch."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import weakref
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from convseg_deploy.cli import main
from convseg_deploy.deploy import inputs as inputs_mod
from convseg_deploy.deploy.predict_records import CSV_COLUMNS
from convseg_deploy.deploy.render import write_png
from convseg_deploy.synth import render_frame, write_video
from tests.deploy.cpu_runtime import CPU_LABEL

ROOT = Path(__file__).resolve().parents[2]


def cli(*args: object):
    return CliRunner().invoke(main, [str(a) for a in args])


def frame(seed: int, size: int = 64) -> np.ndarray:
    return render_frame(np.random.default_rng(seed), size, empty_fraction=0.0)[0]


@pytest.fixture
def images(tmp_path: Path) -> Path:
    """A folder of three frames, one of them not square (48x80)."""
    folder = tmp_path / "imgs"
    folder.mkdir()
    write_png(folder / "a.png", frame(1))
    write_png(folder / "b.png", frame(2))
    write_png(folder / "wide.png", np.ascontiguousarray(frame(3, 80)[:48]))
    return folder


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_video(tmp_path_factory.mktemp("video") / "clip.mp4", count=7, size=64, seed=5, fps=5)


def test_images_with_every_output(bundle_dir: Path, images: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = cli("predict", "--model", bundle_dir, images / "wide.png", images / "a.png", "--out", out,
                 "--overlay", "--heatmap", "--save-prob", "--no-progress")
    assert result.exit_code == 0, result.output
    assert "using model." in result.output and CPU_LABEL in result.output
    mask = cv2.imread(str(out / "masks" / "wide.png"), cv2.IMREAD_UNCHANGED)
    assert mask.shape == (48, 80) and mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 255}
    assert cv2.imread(str(out / "overlays" / "wide.png")).shape == (48, 80, 3)
    assert cv2.imread(str(out / "heatmaps" / "wide.png")).shape == (48, 80, 3)
    prob = cv2.imread(str(out / "probs" / "wide.png"), cv2.IMREAD_UNCHANGED)
    assert prob.shape == (48, 80) and prob.dtype == np.uint16
    # the mask is the probability map above the threshold, at the source resolution
    threshold = json.loads((bundle_dir / "manifest.json").read_text())["threshold"]
    agree = ((prob / 65535.0 > threshold) == (mask > 0)).mean()
    assert agree > 0.99
    summary = json.loads((out / "summary.json").read_text())
    assert summary["complete"] is True and summary["frames"] == 2 and summary["failed"] == []
    assert "items" not in summary and summary["records"] == "records.jsonl" and summary["mask_pngs"] == 2
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    assert [i["name"] for i in records] == ["wide", "a"]
    wide = records[0]
    assert (wide["width"], wide["height"]) == (80, 48)
    assert wide["polyp_area"] == pytest.approx((mask > 0).mean(), abs=1e-6)
    if wide["regions"]:
        x, y, w, h = wide["bbox"]
        assert 0 <= x and x + w <= 80 and 0 <= y and y + h <= 48
    with open(out / "summary.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    assert tuple(rows[0]) == CSV_COLUMNS == ("name", "source", "frame", "width", "height", "polyp_area", "regions",
                                             "bbox_x", "bbox_y", "bbox_w", "bbox_h", "latency_ms")
    assert len(rows) == 3 and float(rows[1][-1]) > 0


def test_folder_with_a_corrupt_image_writes_the_rest(bundle_dir: Path, images: Path, tmp_path: Path) -> None:
    (images / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    out = tmp_path / "out"
    result = cli("predict", "--model", bundle_dir, images, "--out", out, "--no-progress")
    assert result.exit_code == 1
    assert "skipped" in result.output and "broken.jpg" in result.output
    assert "Error: 1 input(s) could not be read in full: " in result.output
    assert sorted(p.name for p in (out / "masks").iterdir()) == ["a.png", "b.png", "wide.png"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames"] == 3 and [Path(f["source"]).name for f in summary["failed"]] == ["broken.jpg"]


def test_glob(bundle_dir: Path, images: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = cli("predict", "--model", bundle_dir, str(images / "[ab].png"), "--out", out, "--no-progress")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (out / "masks").iterdir()) == ["a.png", "b.png"]


def test_video_frames_overlay_video_and_bounded_memory(bundle_dir: Path, video: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    decoded: list[weakref.ref] = []
    peak = [0]
    real_to_rgb = inputs_mod.to_rgb

    def tracking_to_rgb(bgr: np.ndarray) -> np.ndarray:
        alive = sum(ref() is not None for ref in decoded)
        peak[0] = max(peak[0], alive + 1)  # frames still referenced when one more is decoded
        rgb = real_to_rgb(bgr)
        decoded.append(weakref.ref(rgb))
        return rgb

    monkeypatch.setattr(inputs_mod, "to_rgb", tracking_to_rgb)
    out = tmp_path / "out"
    result = cli("predict", "--model", bundle_dir, video, "--out", out, "--overlay", "--batch-size", 3)
    assert result.exit_code == 0, result.output
    # a video: its overlay video and one record per frame, no PNG per frame unless asked for
    assert not (out / "masks").exists() and not (out / "overlays").exists()
    assert peak[0] <= 3, f"{peak[0]} frames were held at once with --batch-size 3"
    cap = cv2.VideoCapture(str(out / "clip_overlay.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 7
    ok, first = cap.read()
    cap.release()
    assert ok and first.shape == (64, 64, 3)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames"] == 7 and summary["mask_pngs"] == 0 and summary["videos"] == ["clip_overlay.mp4"]
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    assert [r["frame"] for r in records] == list(range(7))
    assert len((out / "summary.csv").read_text().splitlines()) == 8
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp files left


def test_video_frame_pngs_on_request(bundle_dir: Path, video: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = cli("predict", "--model", bundle_dir, video, "--out", out, "--overlay", "--frame-pngs", "--no-progress")
    assert result.exit_code == 0, result.output
    names = [f"clip_{i:06d}.png" for i in range(7)]
    assert sorted(p.name for p in (out / "masks").iterdir()) == names
    assert sorted(p.name for p in (out / "overlays").iterdir()) == names
    assert json.loads((out / "summary.json").read_text())["mask_pngs"] == 7


def test_records_stream_to_disk_not_memory(bundle_dir: Path, video: Path, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Each frame's record is on disk (under the temporary name) before the next batch runs, and
    the summary written mid-run holds counts, not records."""
    from convseg_deploy.deploy import predict as predict_mod

    seen: list[tuple[int, int]] = []
    real = predict_mod._Run.run_batch

    def watching(self, batch):  # noqa: ANN001, ANN202
        real(self, batch)
        self.records.jsonl.flush()
        seen.append((self.records.frames, len(self.records.tmps[0].read_text().splitlines())))
        assert "items" not in self.summary(complete=False)

    monkeypatch.setattr(predict_mod._Run, "run_batch", watching)
    out = tmp_path / "out"
    assert cli("predict", "--model", bundle_dir, video, "--out", out, "--batch-size", 2, "--no-progress").exit_code == 0
    assert seen == [(2, 2), (4, 4), (6, 6), (7, 7)]


@pytest.mark.parametrize("case", ["empty folder", "missing input"])  # a bad video is skipped: tests/faults
def test_bad_inputs_fail_before_writing(bundle_dir: Path, tmp_path: Path, case: str) -> None:
    if case == "empty folder":
        (tmp_path / "empty").mkdir()
        target, message = tmp_path / "empty", "has no images"
    else:
        target, message = tmp_path / "nope.png", "not found"
    out = tmp_path / "out"
    result = cli("predict", "--model", bundle_dir, target, "--out", out)
    assert result.exit_code == 1 and message in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not out.exists()


def test_not_a_model(tmp_path: Path, images: Path) -> None:
    fake = tmp_path / "model.onnx"
    fake.write_bytes(b"this is not protobuf")
    result = cli("predict", "--model", fake, images / "a.png", "--out", tmp_path / "out")
    assert result.exit_code == 1 and "is not a readable ONNX model" in result.output
    assert not (tmp_path / "out" / "summary.json").exists()


def test_bundle_with_a_wrong_checksum_is_refused(bundle_copy: Path, images: Path, tmp_path: Path) -> None:
    manifest = json.loads((bundle_copy / "manifest.json").read_text())
    chosen = json.loads(json.dumps(manifest))  # which file auto picks on a CPU: damage exactly that one
    first = cli("predict", "--model", bundle_copy, images / "a.png", "--out", tmp_path / "probe", "--no-progress")
    used = Path(json.loads((tmp_path / "probe" / "summary.json").read_text())["model"]).name
    assert used in {e["file"] for e in chosen["artifacts"]} and first.exit_code == 0
    path = bundle_copy / used
    data = bytearray(path.read_bytes())
    data[100] ^= 1
    path.write_bytes(bytes(data))
    out = tmp_path / "out"
    result = cli("predict", "--model", bundle_copy, images / "a.png", "--out", out)
    assert result.exit_code == 1
    assert f"{used}: checksum mismatch" in result.output and not out.exists()


def test_precision_picks_from_a_bundle(bundle_dir: Path, images: Path, tmp_path: Path) -> None:
    result = cli("predict", "--model", bundle_dir, images / "a.png", "--out", tmp_path / "out", "--precision", "fp32",
                 "--threshold", "0.3", "--no-progress")
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["precision"] == "fp32" and summary["threshold"] == 0.3
    result = cli("predict", "--model", bundle_dir, images / "a.png", "--out", tmp_path / "o2", "--precision", "fp16")
    assert result.exit_code == 1 and "has no fp16 model" in result.output


def test_export_folder_as_model(artifacts: Path, images: Path, tmp_path: Path) -> None:
    result = cli("predict", "--model", artifacts, images / "a.png", "--out", tmp_path / "out", "--precision", "fp32",
                 "--no-progress")
    assert result.exit_code == 0, result.output
    assert f"using model.fp32.onnx on {CPU_LABEL}" in result.output


def test_a_run_that_stops_part_way_is_marked_incomplete(bundle_dir: Path, video: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from convseg_deploy.deploy import predict as predict_mod
    from convseg_deploy.errors import ConvSegError

    real_write = predict_mod._Run._write
    written = []

    def failing_write(self, frame, logit, latency_ms):  # noqa: ANN001, ANN202 - test double
        if len(written) == 4:
            raise ConvSegError("disk full (simulated)")
        written.append(frame.name)
        real_write(self, frame, logit, latency_ms)

    monkeypatch.setattr(predict_mod._Run, "_write", failing_write)
    out = tmp_path / "out"
    result = cli("predict", "--model", bundle_dir, video, "--out", out, "--overlay", "--batch-size", 2, "--no-progress")
    assert result.exit_code == 1 and "disk full (simulated)" in result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["complete"] is False and summary["error"] == "disk full (simulated)" and summary["frames"] == 4
    assert not (out / "summary.csv").exists()
    assert not (out / "clip_overlay.mp4").exists() and not [p for p in out.iterdir() if p.name.startswith(".")]


def test_checkpoint_runs_on_torch(trained_checkpoint: Path, images: Path, tmp_path: Path) -> None:
    result = cli("predict", "--model", trained_checkpoint, images / "wide.png", "--out", tmp_path / "out", "--no-progress")
    assert result.exit_code == 0, result.output
    assert "on PyTorch (CPU)" in result.output
    assert cv2.imread(str(tmp_path / "out" / "masks" / "wide.png"), cv2.IMREAD_UNCHANGED).shape == (48, 80)


def test_predict_and_verify_never_import_torch(bundle_dir: Path, images: Path, video: Path, tmp_path: Path) -> None:
    script = (
        "import sys\n"
        "from convseg_deploy.cli import main\n"
        "for args in sys.argv[1:]:\n"
        "    try:\n"
        "        main(args.split('|'), standalone_mode=False)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "heavy = sorted(m for m in ('torch', 'torchvision', 'timm') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
        "print('NO-TORCH-OK')\n"
    )
    commands = [f"verify|{bundle_dir}",
                f"predict|--model|{bundle_dir}|{images}|{video}|--out|{tmp_path / 'o1'}|--overlay|--heatmap|--no-progress",
                f"predict|--model|{bundle_dir / 'model.fp32.onnx'}|{images / 'a.png'}|--out|{tmp_path / 'o2'}|--no-progress"]
    proc = subprocess.run([sys.executable, "-c", script, *commands], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "NO-TORCH-OK" in proc.stdout and "bundle OK" in proc.stdout
    assert json.loads((tmp_path / "o1" / "summary.json").read_text())["frames"] == 10
