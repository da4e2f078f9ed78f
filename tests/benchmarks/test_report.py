"""The table, report files and plots, from handmade results (no model runs here)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from convseg_deploy.benchmarks.machine import describe_machine
from convseg_deploy.hardware.cpu import physical_cores
from convseg_deploy.hardware.cpu import describe, this_cpu
from convseg_deploy.benchmarks.plots import write_plots
from convseg_deploy.benchmarks.report import (
    CSV_FIELDS,
    HEADERS,
    build_report,
    format_table,
    notes,
    write_reports,
)


def result(status: str = "ok", batch: int = 1, provider: str = "cpu", reason: str | None = None, **kw: Any) -> dict[str, Any]:
    ok = status == "ok"
    base = {"backend": "onnxruntime", "provider": provider, "precision": "int8-cpu", "artifact": "a/model.int8-cpu.onnx",
            "batch_size": batch, "status": status, "reason": reason, "iters": 3 if ok else None,
            "latency_ms": {"mean": 10.0, "p50": 9.5, "p90": 11.0, "p95": 12.0, "p99": 13.25, "min": 9.0, "max": 14.0} if ok else None,
            "fps": 100.0 * batch if ok else None, "e2e_fps": 50.0 if ok else None, "dice": 0.8123 if ok else None,
            "iou": 0.7 if ok else None, "dice_drop": -0.0012 if ok else None, "agreement": 0.99 if ok else None,
            "accuracy_reason": None, "size_mb": 3.2, "peak_memory_mb": None,
            "runner_key": f"onnxruntime/{provider}/int8-cpu:a/model.int8-cpu.onnx"}
    base.update(kw)
    return base


RESULTS = [result(batch=1, gmac_per_frame=1.274, gmac_per_s=127.4), result(batch=8),
           result("skipped", 1, "cuda", "no CUDA GPU found on this machine"),
           result("skipped", 8, "cuda", "no CUDA GPU found on this machine")]
GATES = [{"name": "ran", "passed": True, "detail": "2 of 4 rows ran"},
         {"name": "min-fps onnxruntime/cpu/int8-cpu model.int8-cpu.onnx bs1", "passed": False, "detail": "100 FPS (needed 1e+09)"}]


def test_table_has_the_columns_and_collapses_skipped_batches() -> None:
    text = format_table(RESULTS)
    lines = text.splitlines()
    for header in HEADERS:
        assert header in lines[0]
    assert len(lines) == 2 + 3  # header, rule, two ok rows, one skipped row for both batch sizes
    assert "skipped" in lines[-1] and " 1,8 " in lines[-1]
    assert "0.8123" in lines[2] and "-0.0012" in lines[2] and "13.25" in lines[2] and "800" in lines[3]
    work = lines[0].index("GMAC/frame")  # each frame's work, so that a slimmed model's FPS reads against it
    assert lines[2][work:].startswith("1.27 ") and lines[3][work:].startswith("- ")
    assert notes(RESULTS) == ["skipped: onnxruntime/cuda/int8-cpu model.int8-cpu.onnx: no CUDA GPU found on this machine"]


def test_reports_are_written_with_the_documented_fields(tmp_path: Path) -> None:
    report = build_report(describe_machine(2), RESULTS, GATES, RESULTS[0], {"iters": 3}, None)
    written = write_reports(tmp_path / "out", report, write_plots)
    assert sorted(p.name for p in written) == ["dice_vs_fps.png", "fps.png", "report.csv", "report.json", "report.md",
                                                     "roofline.png"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(p.name for p in written)  # no temporaries left

    data = json.loads((tmp_path / "out" / "report.json").read_text())
    assert {"machine", "results", "gates"} <= set(data)
    assert {"cpu", "physical_cores", "threads", "gpu", "driver", "versions"} <= set(data["machine"])
    # the CPU with the instruction sets every number depends on, from the one probe
    isa = data["machine"]["cpu_isa"]
    assert {"model", "microarch", "avx2", "avx512", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx"} <= set(isa)
    assert data["machine"]["cpu_description"] == describe(this_cpu()) and "AVX2" in data["machine"]["cpu_description"]
    assert {"python", "torch", "onnxruntime", "tensorrt"} <= set(data["machine"]["versions"])
    assert data["results"][0]["latency_ms"]["p99"] == 13.25
    assert data["gates"][1]["passed"] is False

    with open(tmp_path / "out" / "report.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert tuple(rows[0]) == CSV_FIELDS and len(rows) == 4
    assert rows[0]["latency_p99_ms"] == "13.25" and rows[2]["status"] == "skipped"

    md = (tmp_path / "out" / "report.md").read_text()
    assert f"Machine: {describe(this_cpu())}; " in md
    assert "| Backend | Provider |" in md and "FAIL  min-fps" in md and "no CUDA GPU" in md
    for png in ("fps.png", "dice_vs_fps.png", "roofline.png"):
        assert (tmp_path / "out" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plots_cope_with_nothing_ran(tmp_path: Path) -> None:
    paths = write_plots(tmp_path, RESULTS[2:])
    assert all(p.stat().st_size > 0 for p in paths)


def test_machine_counts_cores_within_the_affinity_mask() -> None:
    import os

    assert 1 <= physical_cores() <= len(os.sched_getaffinity(0))
    machine = describe_machine(threads=3)
    assert machine["threads"] == 3 and machine["versions"]["python"]


def test_few_iterations_show_the_max_not_a_p99_and_gpu_rows_show_device_time() -> None:
    short = result(iters=20, latency_ms={"mean": 10.0, "p50": 9.5, "p90": 11.0, "p95": 12.0, "p99": None, "min": 9.0,
                                         "max": 14.5},
                   device_ms={"mean": 7.0, "p50": 6.75, "p90": 7.5, "p95": 7.6, "p99": None, "min": 6.0, "max": 8.0})
    line = format_table([short]).splitlines()[2]
    assert "14.50 (max)" in line and "6.75" in line
    assert notes([short]) == ["p99 needs 100 timed iterations (as few as 20 here): the maximum is shown instead; "
                              "use --iters 100 or more, or --duration"]
    assert "(max)" not in format_table(RESULTS) and notes(RESULTS)[-1].startswith("skipped")
