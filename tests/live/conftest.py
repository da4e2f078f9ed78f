"""Fixtures of the live tests: a synthetic clip for the senders, small models, and the checks
every live run must pass (counts that add up, whole files only under final names)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from convseg_deploy.live.records import FRAME_KEYS, SUMMARY_KEYS
from convseg_deploy.synth import write_video


@pytest.fixture(scope="session")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two seconds of synthetic colonoscopy at 30 fps, 64x64 (the tiny models' size)."""
    return write_video(tmp_path_factory.mktemp("clips") / "clip.mp4", count=60, size=64, seed=5, fps=30)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.fakes.onnx_models import tiny_onnx

    return tiny_onnx(tmp_path_factory.mktemp("tiny") / "tiny.onnx", size=64, precision="fp32")


@pytest.fixture(scope="session")
def slow_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.fakes.onnx_models import slow_onnx

    return slow_onnx(tmp_path_factory.mktemp("slow") / "slow.onnx")


def read_run(out: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """summary.json and the records of frames.jsonl of a finished run, checked for what every
    run must hold: the summary's keys, counts that add up, one whole record per frame shown,
    and no hidden (temporary) file left anywhere under ``out``."""
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary)[: len(SUMMARY_KEYS)] == list(SUMMARY_KEYS)
    assert summary["complete"] is True
    assert summary["frames_inferred"] + summary["frames_skipped"] == summary["frames_in"], summary
    assert summary["frames_out"] == summary["frames_in"], summary
    assert sorted(str(p.relative_to(out)) for p in out.rglob(".*")) == []
    lines = (out / "frames.jsonl").read_text().splitlines() if (out / "frames.jsonl").exists() else []
    records = [json.loads(line) for line in lines]
    assert all(list(r) == list(FRAME_KEYS) for r in records)
    assert sum(r["inferred"] for r in records) == summary["frames_inferred"] or \
        summary["outputs"]["frames_jsonl"]["error"]
    cpu = summary["cpu_s"]  # the process's CPU since the stages started, and each stage's own thread
    assert list(cpu) == ["process", "capture", "inference", "finish", "output", "other"] and min(cpu.values()) >= 0, cpu
    assert cpu["capture"] + cpu["inference"] + cpu["finish"] + cpu["output"] <= cpu["process"] + 0.004, cpu  # 4 roundings
    return summary, records


def only_summary(out: Path) -> dict[str, Any]:
    """The summary of a run that could not start: the one file in ``out``, saying why."""
    assert sorted(p.name for p in out.iterdir()) == ["summary.json"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["ended_by"] == "error" and summary["error"] and summary["frames_in"] == 0
    return summary
