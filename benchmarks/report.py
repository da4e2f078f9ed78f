"""Presenting judged results: the terminal table, report.json, report.csv and report.md.

All files are written atomically (``convseg_deploy.fsutil``), so an interrupted bench never
leaves a half-written report under its final name.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path
from typing import Any

from convseg_deploy.benchmarks.efficiency import COLUMNS
from convseg_deploy.benchmarks.gates import label
from convseg_deploy.benchmarks.timing import MIN_P99_SAMPLES, STAT_KEYS
from convseg_deploy.fsutil import atomic_path, write_json

Result = dict[str, Any]
# "p99 ms" holds the maximum, marked "(max)", where fewer than MIN_P99_SAMPLES iterations were timed;
# "GPU ms" is the median device time from CUDA events (GPU backends), next to the host-timed p50;
# "GMAC/frame" is the work of one frame of the row's model (a slimmed model's FPS reads against it),
# "GMAC/s" the work the row gets done, "Eff." that over the measured peak of its precision.
HEADERS = ("Backend", "Provider", "Precision", "Batch", "Status", "Size MB", "Dice", "ΔDice", "Agreement",
           "p50 ms", "p99 ms", "GPU ms", "FPS", "e2e FPS", "GMAC/frame", "GMAC/s", "Eff.")
CSV_FIELDS = ("backend", "provider", "precision", "artifact", "batch_size", "status", "reason",
              *(f"latency_{k}_ms" for k in STAT_KEYS), "device_p50_ms", "device_mean_ms", "iters", "fps", "e2e_fps",
              "dice", "iou", "dice_drop", "agreement", "size_mb", "peak_memory_mb", "concurrency", "server_queue_ms",
              "server_compute_ms", "server_batch", *COLUMNS, "peak_gmac_per_s")


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def _fps(value: float | None) -> str:
    # Three significant digits: a CPU may do 0.9 FPS and a GPU 900.
    return "-" if value is None else f"{value:.3g}" if value < 100 else f"{value:.0f}"


def _tail(lat: dict[str, Any]) -> str:
    if lat.get("p99") is not None:
        return f"{lat['p99']:.2f}"
    return "-" if lat.get("max") is None else f"{lat['max']:.2f} (max)"


def table_rows(results: list[Result]) -> list[list[str]]:
    """Cells of the table. Skipped/failed rows of one runner that differ only in batch size
    (same reason) are shown once, with their batch sizes joined."""
    rows: list[list[str]] = []
    last: tuple[str, str | None] | None = None
    for r in results:
        lat = r["latency_ms"] or {}
        if r["status"] != "ok" and last == (r["runner_key"], r["reason"]):
            rows[-1][3] += f",c{r['concurrency']}" if r.get("concurrency") else f",{r['batch_size']}"
            continue
        last = (r["runner_key"], r["reason"]) if r["status"] != "ok" else None
        batch = str(r["batch_size"]) + (f" (c{r['concurrency']})" if r.get("concurrency") else "")  # triton: streams
        rows.append([r["backend"], r["provider"], r["precision"], batch, r["status"],
                     _num(r["size_mb"], ".1f"), _num(r["dice"], ".4f"), _num(r["dice_drop"], "+.4f"),
                     _num(r["agreement"], ".4f"), _num(lat.get("p50"), ".2f"), _tail(lat),
                     _num((r.get("device_ms") or {}).get("p50"), ".2f"), _fps(r["fps"]), _fps(r["e2e_fps"]),
                     _fps(r.get("gmac_per_frame")), _fps(r.get("gmac_per_s")), _num(r.get("efficiency"), ".2f")])
    return rows


def format_table(results: list[Result]) -> str:
    """A fixed-width table for the terminal."""
    rows = table_rows(results)
    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h) for i, h in enumerate(HEADERS)]

    def line(cells: list[str] | tuple[str, ...]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()

    return "\n".join([line(HEADERS), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def notes(results: list[Result]) -> list[str]:
    """One line per distinct reason a runner was skipped or failed, or lacks accuracy."""
    out: list[str] = []
    for r in results:
        if r["status"] != "ok":  # batch-specific failures name their batch in the reason
            text = f"{r['status']}: {label(r)}: {r['reason']}"
        elif r["accuracy_reason"]:
            text = f"accuracy unavailable: {label(r)}: {r['accuracy_reason']}"
        elif r.get("input_note"):
            text = f"note: {label(r)} {r['input_note']}"
        elif r.get("server_compute_ms") is not None:  # Triton's own view of the same window
            text = (f"server: {label(r)} c{r['concurrency']}: queue {_num(r['server_queue_ms'], '.2f')} ms, compute "
                    f"{r['server_compute_ms']:.2f} ms per request, mean batch {_num(r['server_batch'], '.2f')}, p90 "
                    f"{r['latency_ms']['p90']:.2f} ms")
        else:
            continue
        if text not in out:
            out.append(text)
    short = [r for r in results if r["status"] == "ok" and r["latency_ms"] and r["latency_ms"].get("p99") is None]
    if short:
        fewest = min(r["iters"] for r in short)
        out.append(f"p99 needs {MIN_P99_SAMPLES} timed iterations (as few as {fewest} here): the maximum is shown "
                   "instead; use --iters 100 or more, or --duration")
    return out


def format_gates(gates: list[dict[str, Any]]) -> list[str]:
    return [f"{'PASS' if g['passed'] else 'FAIL'}  {g['name']}: {g['detail']}" for g in gates]


def build_report(machine: dict[str, Any], results: list[Result], gates: list[dict[str, Any]],
                 reference: Result | None, settings: dict[str, Any], no_accuracy: str | None,
                 peak: dict[str, Any] | None = None) -> dict[str, Any]:
    """The report.json document; ``peak``: the probe's ``summary`` the efficiencies are relative to."""
    return {
        "machine": machine,
        "peak": peak,
        "settings": settings,
        "reference": label(reference) if reference else None,
        "accuracy": {"available": no_accuracy is None, "reason": no_accuracy},
        "results": results,
        "gates": gates,
    }


def _csv_row(r: Result) -> dict[str, Any]:
    row = {k: r.get(k) for k in CSV_FIELDS if k in r}
    for k in STAT_KEYS:
        row[f"latency_{k}_ms"] = (r["latency_ms"] or {}).get(k)
    for k in ("p50", "mean"):
        row[f"device_{k}_ms"] = (r.get("device_ms") or {}).get(k)
    return row


def write_csv(path: Path, results: list[Result]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_FIELDS)
        writer.writeheader()
        writer.writerows(_csv_row(r) for r in results)


def markdown(report: dict[str, Any]) -> str:
    """report.md: the table, the reasons, the gates and the machine."""
    m = report["machine"]
    head = "| " + " | ".join(HEADERS) + " |\n|" + "---|" * len(HEADERS) + "\n"
    body = "".join("| " + " | ".join(row) + " |\n" for row in table_rows(report["results"]))
    driver = f" (driver {m['driver']})" if m.get("driver") else ""
    jetson = m.get("jetson") or {}
    clocks = {True: "locked", False: "not locked"}.get(jetson.get("clocks_locked"), "unknown")
    board = (f" {jetson.get('board') or 'Jetson'}: power mode {jetson.get('power_mode') or 'unknown'}, "
             f"clocks {clocks}.") if jetson else ""
    machine = (f"Machine: {m.get('cpu_description') or m['cpu']}; {m['physical_cores']} physical cores, {m['threads']} threads; "
               f"GPU: {m['gpu'] or 'none'}{driver}.{board}\n")
    parts = ["# convseg-deploy bench\n", machine, peak_section(report.get("peak")),
             f"Reference for parity: {report['reference'] or 'none'}.\n", head + body]
    if notes(report["results"]):
        parts.append("## Notes\n\n" + "".join(f"- {n}\n" for n in notes(report["results"])))
    parts.append("## Gates\n\n" + "".join(f"- {line}\n" for line in format_gates(report["gates"])))
    versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v)
    parts.append(f"## Versions\n\n{versions}\n")
    return "\n".join(parts)


def peak_section(peak: dict[str, Any] | None) -> str:
    """The probe's figures that ``Eff.`` divides by (measured: the best any installed library reached)."""
    from convseg_deploy.hardware.peak import format_peak

    if not peak:
        return "Peak: not probed (efficiency not computed).\n"
    lines = "".join(f"- {line}\n" for line in format_peak(peak))
    return (f"Peak GMAC/s of this machine at {peak['threads']} threads (Eff. = a row's GMAC/s over the measured peak of "
            f"its precision; {peak['theoretical_note']}):\n\n{lines}")


def write_reports(out: Path, report: dict[str, Any],
                  plot: Callable[[Path, list[Result], dict[str, Any] | None], list[Path]] | None = None) -> list[Path]:
    """report.json, report.csv, report.md (and the plots) in ``out``; returns the paths."""
    write_json(out / "report.json", report)
    write_csv(out / "report.csv", report["results"])
    with atomic_path(out / "report.md") as tmp:
        tmp.write_text(markdown(report), encoding="utf-8")
    written = [out / "report.json", out / "report.csv", out / "report.md"]
    if plot is not None:
        written += plot(out, report["results"], report.get("peak"))
    return written
