"""The records of a live run: the keys in one place, counts and statistics, frames.jsonl that
keeps only whole lines when a write fails, the corner note on frames without a mask."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import numpy as np
import pytest

from convseg_deploy.errors import ConvSegError
from convseg_deploy.live import journal
from convseg_deploy.live.journal import FramesLog
from convseg_deploy.live.records import ENDED_BY, FRAME_KEYS, SUMMARY_KEYS, FrameRecord, Tally, stats


def record(index: int) -> FrameRecord:
    return FrameRecord(index, 1700000000.0 + index / 30, index % 2 == 0, 12.3456 if index % 2 == 0 else None,
                       index - 1 if index else None, 33.3333 if index else None, 0.25 if index else None,
                       [1, 2, 3, 4] if index else None)


def test_summary_has_the_keys_in_order_and_counts_that_add_up() -> None:
    tally = Tally()
    for i in range(10):
        tally.arrived(100.0 + i / 30)
    tally.skipped(6)
    for latency in (10.0, 20.0, 30.0, 40.0):
        tally.inferred(latency)
    for i in range(10):
        tally.shown(100.01 + i / 30, 5.0 if i else None)
    summary = tally.summary({"source": "udp://x", "backend": "onnxruntime", "model": "m.onnx", "model_sha256": "ab",
                             "mode": "newest_frame"}, complete=True, ended_by="duration")
    assert list(summary)[: len(SUMMARY_KEYS)] == list(SUMMARY_KEYS) and summary["mode"] == "newest_frame"
    assert (summary["frames_in"], summary["frames_inferred"], summary["frames_skipped"], summary["frames_out"],
            summary["frames_masked"]) == (10, 4, 6, 10, 9)
    assert summary["fps_in"] == pytest.approx(30.0) and summary["fps_out"] == pytest.approx(30.0)
    assert summary["fps_inferred"] == pytest.approx(4 / (9 / 30), abs=1e-3)
    assert summary["latency_ms"] == {"p50": 25.0, "p90": 37.0, "p99": 39.7, "max": 40.0}
    assert summary["mask_age_ms"]["max"] == 5.0 and stats([])["p50"] is None
    with pytest.raises(ValueError, match="ended_by"):
        tally.summary({}, complete=True, ended_by="because")
    assert ENDED_BY == ("end_of_stream", "duration", "max_frames", "interrupt", "source_lost", "error")


def test_a_frame_record_is_one_json_line_with_the_frame_keys() -> None:
    line = record(3).to_line()
    assert line.endswith("\n") and line.count("\n") == 1
    assert list(json.loads(line)) == list(FRAME_KEYS)


def test_frames_log_is_renamed_into_place_with_whole_lines(tmp_path: Path) -> None:
    log = FramesLog(tmp_path)
    for i in range(3):
        log.write(record(i))
    assert not (tmp_path / "frames.jsonl").exists() and len(list(tmp_path.glob(".frames.jsonl.*.tmp"))) == 1
    log.close()
    assert [json.loads(line)["index"] for line in (tmp_path / "frames.jsonl").read_text().splitlines()] == [0, 1, 2]
    assert os.stat(tmp_path / "frames.jsonl").st_mode & 0o044  # readable by others, as other outputs


def test_a_failed_write_cuts_frames_log_back_to_its_last_whole_line(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    log = FramesLog(tmp_path)
    log.write(record(0))
    real = os.write

    def half_then_full(fd: int, data: bytes) -> int:  # the disk fills in the middle of a line
        if fd == log.fd:
            real(fd, data[: len(data) // 2])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd, data)

    monkeypatch.setattr(journal.os, "write", half_then_full)
    with pytest.raises(ConvSegError, match=f"cannot write {tmp_path / 'frames.jsonl'}: No space left on device"):
        log.write(record(1))
    log.write(record(2))  # stopped: nothing more is written, nothing raised again
    monkeypatch.undo()
    log.close()
    assert [json.loads(line)["index"] for line in (tmp_path / "frames.jsonl").read_text().splitlines()] == [0]
    assert log.report() == {"path": str(tmp_path / "frames.jsonl"), "frames": 1,
                            "error": f"cannot write {tmp_path / 'frames.jsonl'}: No space left on device"}


def test_corner_note_marks_a_frame_without_a_mask() -> None:
    from convseg_deploy.deploy.render import corner_note

    frame = np.full((120, 160, 3), 128, np.uint8)
    noted = corner_note(frame, "no mask: 412 ms old")
    assert noted.shape == frame.shape and np.array_equal(frame, np.full((120, 160, 3), 128, np.uint8))  # a copy
    changed = np.argwhere((noted != frame).any(axis=2))
    assert changed[:, 0].max() < 20 and changed[:, 1].max() < 100  # a box in the top-left corner only
    box = noted[: changed[:, 0].max() + 1, : changed[:, 1].max() + 1]
    assert (box == 0).mean() > 0.5 and (box > 200).any()  # dark, with light text on it
