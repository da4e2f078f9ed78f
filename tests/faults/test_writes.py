"""Writes that survive faults: a full disk, SIGINT, two runs into one folder, used or unsafe --out."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from convseg_deploy.deploy.render import write_png
from convseg_deploy.fsutil import LOCK_NAME
from convseg_deploy.synth import render_frame, write_video
from tests.faults.helpers import cli, cli_process, error_line

ROOT = Path(__file__).resolve().parents[2]
ENOSPC = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def leftovers(folder: Path) -> list[str]:
    """Hidden temporary files, staging folders or lock files left anywhere under ``folder``."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob(".*"))


@pytest.fixture
def images(tmp_path: Path) -> Path:
    folder = tmp_path / "imgs"
    for i, name in enumerate(("a", "b", "c")):
        write_png(folder / f"{name}.png", render_frame(np.random.default_rng(i), 64, empty_fraction=0.0)[0])
    return folder


def half_then_full(monkeypatch: pytest.MonkeyPatch, method: str, where: str) -> None:
    """``Path.<method>`` writes half of the data, then fails with ENOSPC, for files whose path has ``where``."""
    real = getattr(Path, method)

    def write(self: Path, data, *args, **kwargs):  # noqa: ANN001, ANN202 - Path's own signature
        if where in str(self):
            real(self, data[: len(data) // 2], *args, **kwargs)
            raise ENOSPC
        return real(self, data, *args, **kwargs)

    monkeypatch.setattr(Path, method, write)


def test_disk_full_while_writing_a_mask_png(bundle_dir: Path, images: Path, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    half_then_full(monkeypatch, "write_bytes", "/masks/.b.png")
    out = tmp_path / "out"
    result = cli("predict", "--model", bundle_dir, images, "--out", out, "--no-progress")
    assert result.exit_code == 1
    assert f"cannot write {out / 'masks' / 'b.png'}: No space left on device" in error_line(result.output)
    assert sorted(p.name for p in (out / "masks").iterdir()) == ["a.png"]  # b.png never appeared truncated
    assert cv2.imread(str(out / "masks" / "a.png")) is not None
    assert json.loads((out / "summary.json").read_text())["complete"] is False
    assert leftovers(out) == [] and not (out / "summary.csv").exists()


def test_disk_full_while_writing_the_bench_report(synth_data: Path, artifacts: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    half_then_full(monkeypatch, "write_text", "/.report.json")
    out = tmp_path / "bench"
    result = cli("bench", "--artifacts", artifacts / "model.fp32.onnx", "--data", synth_data, "--max-images", "2", "--backends",
                 "onnxruntime", "--providers", "cpu", "--batch-sizes", "1", "--iters", "1", "--warmup", "0",
                 "--out", out, "--no-progress")
    assert result.exit_code == 1
    assert f"cannot write {out / 'report.json'}: No space left on device" in error_line(result.output)
    assert leftovers(out) == [] and not (out / "report.json").exists()


def test_disk_full_while_bundling(artifacts: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    real = shutil.copyfile

    def full(src, dst, *args, **kwargs):  # noqa: ANN001, ANN202
        real(src, dst, *args, **kwargs)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dst))

    monkeypatch.setattr(shutil, "copyfile", full)
    result = cli("bundle", "--artifacts", artifacts, "--out", tmp_path / "b")
    assert result.exit_code == 1
    assert f"cannot write {tmp_path / 'b'}: No space left on device" in error_line(result.output)
    assert os.listdir(tmp_path) == []


def test_disk_full_while_exporting(trained_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from convseg_deploy.exporters import pipeline

    def full(model, path, *args, **kwargs):  # noqa: ANN001, ANN202
        Path(path).write_bytes(b"half an onnx file")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(pipeline, "export_fp32", full)
    out = tmp_path / "export"
    result = cli("export", "--checkpoint", trained_checkpoint, "--out", out, "--precision", "fp32", "--verify-count", "2")
    assert result.exit_code == 1
    assert f"cannot write the export into {out}: No space left on device" in error_line(result.output)
    assert list(out.iterdir()) == []  # no model, no staging folder, no lock file


def test_sigint_leaves_an_incomplete_summary_and_no_half_file(bundle_dir: Path, tmp_path: Path) -> None:
    video = write_video(tmp_path / "long.mp4", count=1500, size=64, seed=2, fps=25)
    out = tmp_path / "out"
    # Ctrl-C as a terminal delivers it: a suite started in the background by a shell without job
    # control (`make test &`) passes SIGINT on as ignored, and Python then never raises KeyboardInterrupt
    setup = "import signal\nsignal.signal(signal.SIGINT, signal.default_int_handler)"
    proc = subprocess.Popen(cli_process(setup, "predict", "--model", bundle_dir, video, "--out", out, "--overlay",
                                        "--heatmap", "--frame-pngs", "--batch-size", "1", "--no-progress"),
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for _ in range(1200):  # until the first masks exist (bounded: 120 s)
            if (out / "masks").is_dir() and len(os.listdir(out / "masks")) > 5:
                break
            time.sleep(0.1)
        assert proc.poll() is None, "predict finished before the signal could be sent: make the video longer"
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=120)
    finally:
        proc.kill()
    summary = json.loads((out / "summary.json").read_text())
    seen = f"exit {proc.returncode}, {summary['frames']} frames, output: {output[-600:]!r}"
    assert summary["complete"] is False, f"predict ignored the signal: {seen}"
    assert proc.returncode == 1 and "Error: interrupted" in output and "Traceback" not in output
    assert summary["error"] == "KeyboardInterrupt"
    assert leftovers(out) == [] and not (out / "summary.csv").exists() and not list(out.glob("*.mp4"))
    for mask in (out / "masks").iterdir():  # every PNG under a final name is whole
        assert cv2.imread(str(mask), cv2.IMREAD_UNCHANGED) is not None, mask


def test_a_second_run_into_a_locked_folder_fails_at_once(bundle_dir: Path, images: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    holder = subprocess.Popen([sys.executable, "-c", "import sys\nfrom convseg_deploy.fsutil import run_lock\n"
                               f"with run_lock({str(out)!r}):\n    print('locked', flush=True)\n    sys.stdin.read()\n"],
                              cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        result = cli("predict", "--model", bundle_dir, images, "--out", out, "--no-progress")
        assert result.exit_code == 1
        assert f"{out} is in use by another run (pid {holder.pid})" in error_line(result.output)
        assert sorted(os.listdir(out)) == [LOCK_NAME]  # nothing written beside the other run's lock
    finally:
        holder.communicate(input="", timeout=60)
    assert holder.returncode == 0 and not out.exists()  # the holder removed its lock and the folder it made
    result = cli("predict", "--model", bundle_dir, images, "--out", out, "--no-progress")
    assert result.exit_code == 0, result.output


def test_a_used_out_needs_overwrite_which_clears_it(bundle_dir: Path, images: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert cli("predict", "--model", bundle_dir, images, "--out", out, "--no-progress").exit_code == 0
    result = cli("predict", "--model", bundle_dir, images / "a.png", "--out", out, "--no-progress")
    assert result.exit_code == 1 and "holds another run's outputs: pass --overwrite" in error_line(result.output)
    assert sorted(p.name for p in (out / "masks").iterdir()) == ["a.png", "b.png", "c.png"]
    result = cli("predict", "--model", bundle_dir, images / "a.png", "--out", out, "--overwrite", "--no-progress")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (out / "masks").iterdir()) == ["a.png"]  # no stale masks beside the new summary
    assert json.loads((out / "summary.json").read_text())["frames"] == 1


def test_a_folder_that_is_no_run_is_never_cleared(bundle_dir: Path, images: Path, tmp_path: Path) -> None:
    out = tmp_path / "mine"
    (out / "notes.txt").parent.mkdir()
    (out / "notes.txt").write_text("keep me")
    result = cli("predict", "--model", bundle_dir, images, "--out", out, "--overwrite", "--no-progress")
    assert result.exit_code == 1 and "is not empty and holds no earlier run" in error_line(result.output)
    assert os.listdir(out) == ["notes.txt"]


def test_an_output_path_may_not_be_an_input(bundle_dir: Path, images: Path) -> None:
    before = (images / "a.png").read_bytes()
    # overlays/a.png under --out would be the input itself
    (images / "overlays").mkdir()
    (images / "a.png").rename(images / "overlays" / "a.png")
    result = cli("predict", "--model", bundle_dir, images / "overlays" / "a.png", "--out", images, "--overlay",
                 "--no-progress")
    assert result.exit_code == 1 and "lies inside --out" in error_line(result.output)
    assert (images / "overlays" / "a.png").read_bytes() == before
