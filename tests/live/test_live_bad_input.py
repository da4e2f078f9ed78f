"""Bad input to ``live``: one line naming the value, exit 1 (2 for bad usage), and nothing in
--out but a summary that says why (bad usage writes nothing at all)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from convseg_deploy.cli import main
from convseg_deploy.errors import ConvSegError
from convseg_deploy.live.sources import open_source
from convseg_deploy.live.sources.camera import CameraSource
from tests.faults.helpers import error_line
from tests.live.conftest import only_summary
from tests.live.streams import free_tcp_port, free_udp_port


def cli(*args: object):
    return CliRunner().invoke(main, ["live", *(str(a) for a in args)])


def failing_start(model: Path, out: Path, *args: object) -> tuple[str, dict]:
    result = cli("--model", model, "--backend", "onnxruntime", "--out", out, "--no-status", *args)
    assert result.exit_code == 1, result.output
    return error_line(result.output), only_summary(out)


def test_unreachable_urls(tiny_model: Path, tmp_path: Path) -> None:
    refused = f"tcp://127.0.0.1:{free_tcp_port()}"
    line, summary = failing_start(tiny_model, tmp_path / "a", "--source", refused)
    assert line == f"Error: {refused} refused the connection: nothing listens there (is the camera or server running?)"
    assert summary["error"] == line.removeprefix("Error: ") and summary["source"] == refused
    silent = f"udp://127.0.0.1:{free_udp_port()}"
    line, _ = failing_start(tiny_model, tmp_path / "b", "--source", silent, "--open-timeout", "0.5")
    assert line.startswith(f"Error: no video arrived from {silent} within 0.5 s: is the sender running")


def test_a_camera_that_does_not_exist(tiny_model: Path, tmp_path: Path) -> None:
    line, summary = failing_start(tiny_model, tmp_path / "out", "--source", "/dev/video97")
    assert line.startswith("Error: camera /dev/video97 not found: /dev/video97 does not exist")
    line, _ = failing_start(tiny_model, tmp_path / "out2", "--source", "97")
    assert line.startswith("Error: camera 97 not found: /dev/video97 does not exist")


def test_a_device_that_is_no_camera_is_refused_by_opencv(tmp_path: Path) -> None:
    not_a_camera = tmp_path / "video0"
    not_a_camera.write_bytes(b"\0" * 64)
    source = CameraSource(str(not_a_camera))
    source.check()
    with pytest.raises(ConvSegError, match=f"camera {not_a_camera} .* cannot be opened"):
        source.open(1.0)


@pytest.mark.parametrize("pipeline, message", [
    ("gst:videotestsrc ! no_such_element ! appsink", 'no element "no_such_element"'),
    ("gst:videotestsrc ! video/x-raw,width=64 ! ( ! appsink", "syntax error"),
])
def test_a_gstreamer_pipeline_that_does_not_parse(tiny_model: Path, tmp_path: Path, pipeline: str, message: str) -> None:
    line, summary = failing_start(tiny_model, tmp_path / "out", "--source", pipeline)
    assert line.startswith(f"Error: GStreamer cannot run {pipeline}: ") and message in line
    assert summary["source_kind"] == "gstreamer"


def test_a_pipeline_must_end_in_appsink(tiny_model: Path, tmp_path: Path) -> None:
    line, _ = failing_start(tiny_model, tmp_path / "out", "--source", "gst:videotestsrc ! fakesink")
    assert "a gst: pipeline must end in '! appsink'" in line


@pytest.mark.parametrize("args, named", [
    (["--backend", "bogus"], "'bogus' is not one of"),
    (["--max-mask-age-ms", "-5"], "-5"),
    (["--duration", "0"], "--duration"),
])
def test_bad_usage_exits_2_and_writes_nothing(tiny_model: Path, clip: Path, tmp_path: Path, args: list[str],
                                              named: str) -> None:
    result = cli("--model", tiny_model, "--source", clip, "--out", tmp_path / "out", *args)
    assert result.exit_code == 2 and named in result.output, result.output
    assert not (tmp_path / "out").exists()


def test_other_bad_values(tiny_model: Path, clip: Path, tmp_path: Path) -> None:
    line, _ = failing_start(tiny_model, tmp_path / "a", "--source", "ftp://example.invalid/x")
    assert line.startswith("Error: --source ftp://example.invalid/x: unknown scheme ftp://")
    line, _ = failing_start(tiny_model, tmp_path / "b", "--source", tmp_path / "missing.mp4")
    assert line == f"Error: --source {tmp_path / 'missing.mp4'}: not found (give a camera index or /dev/videoN, a " \
                   "video file, a URL or gst:PIPELINE ! appsink)"
    line, _ = failing_start(tiny_model, tmp_path / "c", "--source", clip, "--record", tmp_path / "c" / "x.gif")
    assert "--record" in line and "x.gif" in line
    line, _ = failing_start(tiny_model, tmp_path / "d", "--source", "udp://127.0.0.1:9", "--realtime")
    assert line.startswith("Error: --realtime paces a video file; udp://127.0.0.1:9 is live already")


def test_display_without_a_screen(tiny_model: Path, clip: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    line, _ = failing_start(tiny_model, tmp_path / "out", "--source", clip, "--display")
    assert line.startswith("Error: --display needs a screen, and neither DISPLAY nor WAYLAND_DISPLAY is set")
    import cv2

    if "GUI:                           NONE" in cv2.getBuildInformation():  # opencv-python-headless, as installed
        monkeypatch.setenv("DISPLAY", ":99")  # a screen is named, but this OpenCV has no windows
        line, _ = failing_start(tiny_model, tmp_path / "out2", "--source", clip, "--display")
        assert line.startswith("Error: --display: this OpenCV (opencv-python-headless) has no windows")


def test_a_missing_model_leaves_only_the_summary(clip: Path, tmp_path: Path) -> None:
    line, summary = failing_start(tmp_path / "none.onnx", tmp_path / "out", "--source", clip)
    assert f"model {tmp_path / 'none.onnx'} not found" in line and summary["source_kind"] == "file"


def test_a_second_run_into_the_same_out_needs_overwrite(tiny_model: Path, clip: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert cli("--model", tiny_model, "--source", clip, "--out", out, "--no-status").exit_code == 0
    again = cli("--model", tiny_model, "--source", clip, "--out", out, "--no-status")
    assert again.exit_code == 1 and "pass --overwrite" in error_line(again.output)
    assert cli("--model", tiny_model, "--source", clip, "--out", out, "--no-status", "--overwrite").exit_code == 0
    assert json.loads((out / "summary.json").read_text())["frames_in"] == 60


def test_gst_launch_line_keeps_the_users_pipeline_and_sync() -> None:
    from convseg_deploy.live.sources.gstreamer import to_launch_line

    assert to_launch_line("gst:videotestsrc ! video/x-raw,width=64 ! appsink") == \
        "videotestsrc ! video/x-raw,width=64 ! videoconvert ! video/x-raw,format=I420 ! y4menc ! fdsink fd=1 sync=true"
    assert to_launch_line("gst:a ! b ! appsink name=s sync=false").endswith("fdsink fd=1 sync=false")
    with pytest.raises(ConvSegError, match="No closing quotation"):
        open_source('gst:videotestsrc ! "video/x-raw ! appsink')


def test_yuv4mpeg_frames_become_rgb() -> None:
    """A real gst-launch-1.0 run: the I420 picture through the pipe is the RGB frame GStreamer made."""
    source = open_source("gst:videotestsrc num-buffers=3 pattern=red ! video/x-raw,width=32,height=16,framerate=30/1 "
                         "! appsink")
    source.open(30.0)
    try:
        frames = [source.read() for _ in range(3)]
        assert source.read() is None  # end of stream after the three buffers
    finally:
        source.close()
    assert source.fps == 30.0 and all(f.image.shape == (16, 32, 3) for f in frames)
    red = frames[0].image.reshape(-1, 3).mean(axis=0)
    assert red[0] > 200 and red[1] < 40 and red[2] < 40, red
    assert np.all(np.diff([f.arrival for f in frames]) >= 0)
