"""``predict``'s per-frame records, streamed to disk instead of kept in memory.

A video of an hour is about 100,000 frames: one record each in memory (and in summary.json) would
grow without bound. Each frame's record goes as one line to ``records.jsonl`` and one row to
``summary.csv`` as soon as it is made; both grow under hidden temporary names (``temp_beside``)
and are renamed to their final names by ``finish``; ``abort`` removes them, so no half-written
file is ever left under either name. ``summary.json`` keeps only the aggregates.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any

from convseg_deploy.errors import ConvSegError
from convseg_deploy.fsutil import temp_beside

RECORDS_FILE = "records.jsonl"
CSV_FILE = "summary.csv"
CSV_COLUMNS = ("name", "source", "frame", "width", "height", "polyp_area", "regions", "bbox_x", "bbox_y", "bbox_w",
               "bbox_h", "latency_ms")


class RecordFiles:
    """records.jsonl and summary.csv of one run, and the running aggregates for summary.json."""

    def __init__(self, out: Path) -> None:
        self.finals = (out / RECORDS_FILE, out / CSV_FILE)
        self.tmps = [temp_beside(final) for final in self.finals]
        self.jsonl = open(self.tmps[0], "w")  # noqa: SIM115 - open for the whole run, closed in finish/abort
        self.csv_file = open(self.tmps[1], "w", newline="")  # noqa: SIM115
        self.csv = csv.writer(self.csv_file)
        self.csv.writerow(CSV_COLUMNS)
        self.frames = 0
        self.with_polyp = 0
        self.latency_sum_ms = 0.0
        self.latency_max_ms = 0.0

    def add(self, record: dict[str, Any]) -> None:
        """Write one frame's record to both files and count it."""
        try:
            self.jsonl.write(json.dumps(record) + "\n")
            box = record["bbox"] or ["", "", "", ""]
            self.csv.writerow([record["name"], record["source"], "" if record["frame"] is None else record["frame"],
                               record["width"], record["height"], record["polyp_area"], record["regions"], *box,
                               record["latency_ms"]])
        except OSError as exc:
            raise ConvSegError(f"cannot write {self.finals[0].parent}'s records: {exc.strerror or exc}") from None
        self.frames += 1
        self.with_polyp += record["regions"] > 0
        self.latency_sum_ms += record["latency_ms"]
        self.latency_max_ms = max(self.latency_max_ms, record["latency_ms"])

    def aggregates(self) -> dict[str, Any]:
        return {"frames": self.frames, "frames_with_polyp": self.with_polyp,
                "latency_ms": {"mean": round(self.latency_sum_ms / self.frames, 3) if self.frames else None,
                               "max": round(self.latency_max_ms, 3) if self.frames else None},
                "records": RECORDS_FILE}

    def _close(self) -> None:
        for handle in (self.jsonl, self.csv_file):
            if not handle.closed:
                handle.close()

    def finish(self) -> None:
        """Flush both files and rename them to their final names (the CSV last but one, the
        caller's summary.json last)."""
        try:
            self._close()
            for tmp, final in zip(self.tmps, self.finals):
                os.replace(tmp, final)
        except OSError as exc:
            self.abort()
            raise ConvSegError(f"cannot write {self.finals[0].parent}'s records: {exc.strerror or exc}") from None

    def abort(self) -> None:
        """Close and remove both temporary files (the run failed or was interrupted)."""
        self._close()
        for tmp in self.tmps:
            tmp.unlink(missing_ok=True)
