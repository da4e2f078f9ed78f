"""Videos: a truncated stream is reported, overlay names are unique, a bad video is skipped, folders hold videos."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from convseg_deploy.deploy.render import write_png
from convseg_deploy.synth import render_frame, write_video
from tests.faults.helpers import cli, cli_process, error_line


def mjpeg_avi(path: Path, count: int) -> Path:
    """An MJPEG AVI of ``count`` frames; its header declares the count, every frame decodes alone."""
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 64))
    rng = np.random.default_rng(0)
    for _ in range(count):
        writer.write(cv2.cvtColor(render_frame(rng, 64)[0], cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def test_a_truncated_video_is_incomplete_with_the_count(bundle_dir: Path, tmp_path: Path) -> None:
    full = mjpeg_avi(tmp_path / "full.avi", 30)
    cut = tmp_path / "in" / "cut.avi"
    cut.parent.mkdir()
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    out = tmp_path / "out"
    result = cli("predict", "--model", bundle_dir, cut, "--out", out, "--no-progress")
    assert result.exit_code == 1
    line = error_line(result.output)
    summary = json.loads((out / "summary.json").read_text())
    decoded = summary["frames"]
    assert 0 < decoded < 30 and f"ended after {decoded} of the 30 frames its header declares" in line
    assert summary["complete"] is False and summary["failed"][0]["source"] == str(cut)
    assert len((out / "records.jsonl").read_text().splitlines()) == decoded


def test_two_videos_with_one_stem_get_two_overlay_videos(bundle_dir: Path, tmp_path: Path) -> None:
    a = write_video(tmp_path / "a" / "clip.mp4", count=3, size=64, seed=1, fps=5)
    b = write_video(tmp_path / "b" / "clip.mp4", count=2, size=64, seed=2, fps=5)
    out = tmp_path / "out"
    result = cli("predict", "--model", bundle_dir, a, b, "--out", out, "--overlay", "--no-progress")
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["videos"] == ["clip_overlay.mp4", "clip_overlay__2.mp4"]
    counts = [int(cv2.VideoCapture(str(out / name)).get(cv2.CAP_PROP_FRAME_COUNT)) for name in summary["videos"]]
    assert counts == [3, 2]


@pytest.mark.parametrize("where", ["argument", "folder"])
def test_a_bad_video_is_skipped_like_a_bad_image(bundle_dir: Path, tmp_path: Path, where: str) -> None:
    folder = tmp_path / "in"
    write_png(folder / "a.png", render_frame(np.random.default_rng(1), 64)[0])
    (folder / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 not really a video" * 10)
    write_video(folder / "good.mp4", count=2, size=64, seed=3, fps=5)
    inputs = [folder] if where == "folder" else [folder / "a.png", folder / "broken.mp4", folder / "good.mp4"]
    out = tmp_path / "out"
    result = cli("predict", "--model", bundle_dir, *inputs, "--out", out, "--no-progress")
    assert result.exit_code == 1
    assert "1 input(s) could not be read in full" in error_line(result.output) and "broken.mp4" in result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames"] == 3 and summary["complete"] is False  # the image and both frames of good.mp4
    assert sorted(p.name for p in (out / "masks").iterdir()) == ["a.png"]  # video frames: records, no PNGs
    names = [json.loads(line)["name"] for line in (out / "records.jsonl").read_text().splitlines()]
    assert names == ["a", "good_000000", "good_000001"]


def test_an_overlay_video_that_does_not_reach_the_disk_is_an_error(bundle_dir: Path, tmp_path: Path) -> None:
    """OpenCV's writer ignores failed writes; a per-file size limit (RLIMIT_FSIZE, which fails
    writes past it the way a full disk does) must still give a one-line error and no video."""
    import subprocess

    video = write_video(tmp_path / "in" / "clip.mp4", count=30, size=96, seed=3, fps=5)
    out = tmp_path / "out"
    setup = ("import resource, signal\n"
             "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead\n"
             "resource.setrlimit(resource.RLIMIT_FSIZE, (24000, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))")
    args = ["predict", "--model", bundle_dir, video, "--out", out, "--overlay", "--no-progress"]
    result = subprocess.run(cli_process(setup, *args), capture_output=True, text=True, timeout=300,
                            cwd=Path(__file__).resolve().parents[2])
    assert result.returncode == 1, result.stdout + result.stderr
    line = error_line(result.stdout + result.stderr)
    assert "could not write" in line and "clip_overlay.mp4" in line and "of its 30 frames are readable" in line
    assert not list(out.glob("*.mp4")) and not list(out.glob(".*"))  # no video, no temp file left
    # the same run without the limit writes the whole video
    ok = subprocess.run(cli_process(setup.replace("24000", "resource.RLIM_INFINITY"), *args[:-4], "--out", tmp_path / "ok",
                                    "--overlay", "--no-progress"), capture_output=True, text=True,
                        timeout=300, cwd=Path(__file__).resolve().parents[2])
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert int(cv2.VideoCapture(str(tmp_path / "ok" / "clip_overlay.mp4")).get(cv2.CAP_PROP_FRAME_COUNT)) == 30
