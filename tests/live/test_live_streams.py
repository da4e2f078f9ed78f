"""``live`` on real streams: Debian's ffmpeg sends MPEG-TS over UDP on 127.0.0.1 at 30 fps.

Each test bounds its waits generously and judges no speed: what it checks are exit codes, the
one-line messages, the summary's counts and that only whole files are left under final names.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from convseg_deploy.cli import main
from tests.deploy.cpu_runtime import CPU_RUNTIME
from tests.faults.helpers import cli_process, error_line
from tests.live.conftest import read_run
from tests.live.streams import Sender, count_frames, free_tcp_port, free_udp_port, udp_url

ROOT = Path(__file__).resolve().parents[2]
GENEROUS_S = "30"  # --open-timeout: bounds a start on a loaded machine, never judges it


def cli(*args: object):
    return CliRunner().invoke(main, ["live", *(str(a) for a in args)])


def test_udp_stream_in_recording_and_stream_out(bundle_dir: Path, clip: Path, tmp_path: Path) -> None:
    port, out = free_udp_port(), tmp_path / "out"
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # where --stream-out sends
    receiver.bind(("127.0.0.1", 0))
    receiver.settimeout(0.0)
    try:
        with Sender(clip, udp_url(port), seconds=30):
            # a bundle on --backend auto: what predict would run here (int8-cpu on this CPU's runtime)
            result = cli("--model", bundle_dir, "--source", f"udp://127.0.0.1:{port}", "--out", out,
                         "--max-frames", 45, "--record", out / "live.mp4",
                         "--stream-out", f"udp://127.0.0.1:{receiver.getsockname()[1]}?pkt_size=1316",
                         "--open-timeout", GENEROUS_S)
        datagrams = []
        with pytest.raises(BlockingIOError):
            while True:
                datagrams.append(receiver.recv(65536))
    finally:
        receiver.close()
    assert result.exit_code == 0, result.output
    summary, records = read_run(out)
    assert summary["ended_by"] == "max_frames" and summary["frames_in"] == 45
    assert (summary["backend"], summary["provider"]) == CPU_RUNTIME and summary["precision"] == "int8-cpu"
    assert summary["model"] == str(bundle_dir / "model.int8-cpu.onnx") and summary["source"] == f"udp://127.0.0.1:{port}"
    assert summary["mode"] == "newest_frame" and summary["source_fps"] == 30
    assert len(summary["model_sha256"]) == 64 and summary["frames_inferred"] >= 1
    outputs = summary["outputs"]
    assert outputs["record"]["frames"] == outputs["stream"]["frames"] == outputs["frames_jsonl"]["frames"] == 45
    assert count_frames(out / "live.mp4") == 45
    assert [r["index"] for r in records] == list(range(45))
    # the stream that went out is MPEG-TS: 188-byte packets that start with the sync byte
    assert datagrams and all(len(d) % 188 == 0 and d[0] == 0x47 for d in datagrams)
    assert result.output.splitlines()[-1].startswith("live: 45 frames in")
    assert re.search(r"^live \d+ s \| in [\d.]+ fps \| inferred [\d.]+ fps \| skipped \d+ \| latency", result.stderr,
                     re.MULTILINE), result.stderr


def lines_written(out: Path) -> int:
    """Records in the frames.jsonl a running live writes (under its temporary name)."""
    partial = list(out.glob(".frames.jsonl.*.tmp"))
    try:
        return partial[0].read_bytes().count(b"\n") if partial else 0
    except FileNotFoundError:  # renamed at the end of the run
        return 0


def wait_for(condition, what: str, bound_s: float = 120.0) -> None:
    deadline = time.monotonic() + bound_s
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_a_sender_that_stops_is_reconnected_and_then_lost(tiny_model: Path, clip: Path, tmp_path: Path) -> None:
    port, out = free_udp_port(), tmp_path / "out"
    url = udp_url(port)
    problems: list[str] = []

    def stop_resume_stop() -> None:
        """Send until live has shown frames, go silent for longer than its stall timeout, send
        again until it shows more, and stop for good."""
        try:
            with Sender(clip, url, seconds=120):
                wait_for(lambda: lines_written(out) >= 10, "no frames from the first sender")
            before = lines_written(out)
            time.sleep(1.5)
            with Sender(clip, url, seconds=120):
                wait_for(lambda: lines_written(out) >= before + 10, "no frames after the reconnection")
        except AssertionError as exc:
            problems.append(str(exc))

    thread = threading.Thread(target=stop_resume_stop)
    thread.start()
    try:
        result = cli("--model", tiny_model, "--backend", "onnxruntime", "--source",
                     f"udp://127.0.0.1:{port}", "--out", out, "--record", out / "live.mp4", "--no-status",
                     "--stall-timeout", "0.5", "--reconnect-timeout", "4", "--open-timeout", GENEROUS_S)
    finally:
        thread.join(180)
    assert not problems, problems
    assert result.exit_code == 1, result.output
    line = error_line(result.output)
    assert line.startswith(f"Error: source udp://127.0.0.1:{port} lost: no data from udp://127.0.0.1:{port} for 0.5 s, "
                           "and not back after 4 s of reconnecting")
    assert "reconnected to" in result.output  # the second sender was picked up
    summary, records = read_run(out)
    assert summary["ended_by"] == "source_lost" and summary["reconnects"] >= 1
    assert summary["error"] == line.removeprefix("Error: ")
    gaps = [b["capture_time"] - a["capture_time"] for a, b in zip(records, records[1:])]
    silence = gaps.index(max(gaps))
    assert gaps[silence] > 1.0 and 10 <= silence + 1 < len(records) - 9  # frames before and after the silence
    # the recording is whole: closed with its index at the end, every frame in it
    assert summary["outputs"]["record"]["kept"] and count_frames(out / "live.mp4") == summary["frames_in"]


def test_ctrl_c_ends_the_run_with_its_summary_and_exit_130(tiny_model: Path, clip: Path, tmp_path: Path) -> None:
    port, out = free_udp_port(), tmp_path / "out"
    # Ctrl-C as a terminal delivers it (a suite started in the background inherits SIGINT ignored)
    setup = "import signal\nsignal.signal(signal.SIGINT, signal.default_int_handler)"
    with Sender(clip, udp_url(port), seconds=60):
        proc = subprocess.Popen(cli_process(setup, "live", "--model", tiny_model, "--backend",
                                            "onnxruntime", "--source", f"udp://127.0.0.1:{port}", "--out", out,
                                            "--record", out / "live.mp4", "--open-timeout", GENEROUS_S),
                                cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            for _ in range(1200):  # until frames are being written (bounded: 120 s)
                partial = list(out.glob(".frames.jsonl.*.tmp"))
                if partial and partial[0].stat().st_size > 2000:
                    break
                assert proc.poll() is None, proc.communicate()[0]
                time.sleep(0.1)
            proc.send_signal(signal.SIGINT)
            output, _ = proc.communicate(timeout=120)
        finally:
            proc.kill()
    assert proc.returncode == 130, output
    assert "Traceback" not in output and "Error:" not in output
    summary, records = read_run(out)
    assert summary["ended_by"] == "interrupt" and summary["frames_in"] >= 10
    assert len(records) == summary["frames_in"] == summary["outputs"]["record"]["frames"]
    assert count_frames(out / "live.mp4") == summary["frames_in"]  # whole up to the interrupt


def test_a_model_slower_than_the_source_skips_frames_never_the_video(slow_model: Path, clip: Path, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from convseg_deploy.runtime import onnxruntime_runner

    made, real = [], onnxruntime_runner.session_options
    monkeypatch.setattr(onnxruntime_runner, "session_options", lambda *a, **k: made.append(real(*a, **k)) or made[-1])
    port, out = free_udp_port(), tmp_path / "out"
    with Sender(clip, udp_url(port), seconds=30) as sender:
        result = cli("--model", slow_model, "--backend", "onnxruntime", "--source", f"udp://127.0.0.1:{port}",
                     "--out", out, "--max-frames", 60, "--record", out / "live.mp4", "--max-mask-age-ms", 150,
                     "--no-status", "--open-timeout", GENEROUS_S, "--no-spin")
        sender.stop()
    assert result.exit_code == 0, result.output
    # --no-spin reached the session: ONNX Runtime's workers sleep between parallel sections
    assert [o.get_session_config_entry("session.intra_op.allow_spinning") for o in made] == ["0"]
    assert isinstance(sender.cpu_s, float)  # read from /proc as it stopped: the harness's CPU, not the pipeline's
    summary, records = read_run(out)
    # about 10 GMAC a frame: below 30 fps on two cores of any of the project's CPUs, so frames are
    # skipped (most of them on this EPYC), and none is left unshown
    assert summary["frames_skipped"] >= 1 and summary["frames_inferred"] >= 1
    assert summary["frames_out"] == summary["outputs"]["record"]["frames"] == count_frames(out / "live.mp4") == 60
    by_index = {r["index"]: r for r in records}
    for record in records:
        assert (record["latency_ms"] is not None) == record["inferred"]
        if record["mask_from"] is not None:  # a mask drawn is an inferred frame's, at or before this one, fresh
            source = by_index[record["mask_from"]]
            assert source["inferred"] and record["mask_from"] <= record["index"]
            assert record["mask_age_ms"] <= 150
            assert record["mask_age_ms"] == pytest.approx((record["capture_time"] - source["capture_time"]) * 1e3,
                                                          abs=0.01)
    assert summary["latency_ms"]["p50"] > 0 and summary["frames_masked"] == sum(r["mask_from"] is not None
                                                                                 for r in records)


def test_a_recording_onto_a_full_disk_stops_alone(tiny_model: Path, tmp_path: Path) -> None:
    from convseg_deploy.synth import write_video

    video = write_video(tmp_path / "in" / "clip.mp4", count=150, size=128, seed=3, fps=30)
    out = tmp_path / "out"
    # A per-file size limit fails writes past it as a full disk does (EFBIG instead of ENOSPC);
    # frames.jsonl (24 KB) and summary.json stay below it, the video (about 240 KB) does not.
    setup = ("import resource, signal\n"
             "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
             "resource.setrlimit(resource.RLIMIT_FSIZE, (60000, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))")
    proc = subprocess.run(cli_process(setup, "live", "--model", tiny_model, "--backend",
                                      "onnxruntime", "--source", video, "--out", out, "--record", out / "live.mp4",
                                      "--no-status"), cwd=ROOT, capture_output=True, text=True, timeout=300)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1, output
    line = error_line(output)
    assert line.startswith(f"Error: output failed: record: recording {out / 'live.mp4'} stopped after ")
    assert "File too large" in line and "inference and the other outputs went on to the end" in line
    assert re.search(r"^warning: recording .* stopped after \d+ frames: File too large; the run goes on without it$",
                     output, re.MULTILINE), output
    summary, records = read_run(out)
    assert summary["ended_by"] == "end_of_stream" and summary["frames_in"] == summary["frames_inferred"] == 150
    record = summary["outputs"]["record"]
    assert 0 < record["frames"] < 150 and record["kept"] is False and "File too large" in record["error"]
    assert not (out / "live.mp4").exists()  # no truncated video under the final name
    assert len(records) == summary["outputs"]["frames_jsonl"]["frames"] == 150


def test_a_closed_receiver_ends_that_stream_only(tiny_model: Path, clip: Path, tmp_path: Path) -> None:
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", free_tcp_port()))
    server.listen(1)
    server.settimeout(60)

    def receive_a_little_then_hang_up() -> None:
        connection, _ = server.accept()
        connection.recv(1000)
        connection.close()

    thread = threading.Thread(target=receive_a_little_then_hang_up)
    thread.start()
    out = tmp_path / "out"
    try:
        result = cli("--model", tiny_model, "--backend", "onnxruntime", "--source", clip, "--realtime", "--out", out,
                     "--stream-out", f"tcp://127.0.0.1:{server.getsockname()[1]}", "--no-status")
    finally:
        thread.join(60)
        server.close()
    assert result.exit_code == 1, result.output
    assert error_line(result.output).startswith("Error: output failed: stream: output stream tcp://127.0.0.1:")
    summary, records = read_run(out)
    assert summary["ended_by"] == "end_of_stream" and summary["frames_in"] == 60 == len(records)
    assert 0 < summary["outputs"]["stream"]["frames"] < 60 and summary["outputs"]["stream"]["error"]


def test_a_gstreamer_pipeline_as_source(tiny_model: Path, tmp_path: Path) -> None:
    pipeline = "gst:videotestsrc num-buffers=25 ! video/x-raw,width=64,height=48,framerate=30/1 ! appsink"
    result = cli("--model", tiny_model, "--backend", "onnxruntime", "--source", pipeline, "--out", tmp_path / "out",
                 "--no-status")
    assert result.exit_code == 0, result.output
    summary, records = read_run(tmp_path / "out")
    # a pipe loses nothing: every buffer of the pipeline arrives, then its end of stream
    assert summary["ended_by"] == "end_of_stream" and summary["frames_in"] == 25 and summary["source_fps"] == 30
    assert summary["source_kind"] == "gstreamer" and summary["mode"] == "newest_frame"


def test_live_never_imports_torch(tiny_model: Path, clip: Path, tmp_path: Path) -> None:
    script = ("import sys\nfrom convseg_deploy.cli import main\n"
              "try:\n    main(sys.argv[1:], standalone_mode=False)\nexcept SystemExit:\n    pass\n"
              "heavy = sorted(m for m in ('torch', 'torchvision', 'timm') if m in sys.modules)\n"
              "assert not heavy, heavy\nprint('NO-TORCH-OK')\n")
    proc = subprocess.run([sys_executable(), "-c", script, "live", "--model", str(tiny_model), "--source", str(clip),
                           "--out", str(tmp_path / "out"), "--no-status"], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0 and "NO-TORCH-OK" in proc.stdout, proc.stdout + proc.stderr
    assert "live: 60 frames in" in proc.stdout


def sys_executable() -> str:
    import sys

    return os.fsdecode(sys.executable)
