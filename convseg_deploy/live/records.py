"""What a live run records: one line per captured frame (``frames.jsonl``) and ``summary.json``.

The one place for their keys and for what the numbers mean; ``live`` and any other application
that segments a live source (the Holoscan application) write the same files through this module.

Times (seconds on one monotonic clock, ``time.perf_counter``; ``capture_time`` is the same
instant on the wall clock, Unix time):

- *arrival* of a frame: the moment its source handed it to the pipeline, decoded, as RGB (for a
  file paced with ``--realtime``: when the pacing released it, as a camera would deliver it).
- ``latency_ms`` (inferred frames only): from the frame's arrival to its mask being ready for
  drawing, i.e. preprocessed, inferred, postprocessed to the frame's size and published. It
  includes any wait for the model to become free.
- ``mask_age_ms`` (frames with a mask drawn): the arrival of the frame shown minus the arrival
  of the frame the mask was computed from: how much older the picture the mask describes is
  than the picture it is drawn on (0 when a frame carries its own mask). A mask older than
  ``--max-mask-age-ms`` is not drawn, and the frame then has ``mask_age_ms`` null.

Counts always add up: every captured frame is either inferred or skipped (inference took a newer
one), so ``frames_inferred + frames_skipped == frames_in``; ``frames_out`` counts the frames the
output stage passed on, and each requested output's own ``frames`` equals it unless that output
failed (its ``error`` says when and why).
"""

from __future__ import annotations

import json
from array import array
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

FORMAT = "convseg-deploy/live/v1"
FRAMES_FILE, SUMMARY_FILE = "frames.jsonl", "summary.json"
ENDED_BY = ("end_of_stream", "duration", "max_frames", "interrupt", "source_lost", "error")
STAT_KEYS = ("p50", "p90", "p99", "max")
FRAME_KEYS = ("index", "capture_time", "inferred", "latency_ms", "mask_from", "mask_age_ms", "polyp_area", "bbox")
# The keys every summary has, in this order (more follow: see Tally.summary).
SUMMARY_KEYS = ("format", "complete", "ended_by", "error", "source", "backend", "model", "model_sha256",
                "frames_in", "frames_inferred", "frames_skipped", "frames_out", "frames_masked",
                "fps_in", "fps_inferred", "fps_out", "latency_ms", "mask_age_ms", "outputs", "warnings")


@dataclass(frozen=True)
class FrameRecord:
    """One line of frames.jsonl (FRAME_KEYS, in this order).

    mask_from: index of the frame whose mask is drawn on this one (None: none drawn).
    polyp_area, bbox: of the drawn mask: area share of the frame, largest region (x, y, w, h).
    """

    index: int
    capture_time: float
    inferred: bool
    latency_ms: float | None
    mask_from: int | None
    mask_age_ms: float | None
    polyp_area: float | None
    bbox: list[int] | None

    def to_line(self) -> str:
        values = asdict(self)
        for key in ("latency_ms", "mask_age_ms"):
            if values[key] is not None:
                values[key] = round(values[key], 3)
        if values["polyp_area"] is not None:
            values["polyp_area"] = round(values["polyp_area"], 6)
        values["capture_time"] = round(values["capture_time"], 6)
        return json.dumps(values, separators=(",", ":")) + "\n"


def stats(values: Any) -> dict[str, float | None]:
    """p50, p90, p99 (numpy's linear interpolation) and max of ``values`` in ms; None when empty."""
    data = np.asarray(values, dtype=np.float64)
    if data.size == 0:
        return {key: None for key in STAT_KEYS}
    p50, p90, p99 = np.percentile(data, [50, 90, 99])
    return {"p50": round(float(p50), 3), "p90": round(float(p90), 3), "p99": round(float(p99), 3),
            "max": round(float(data.max()), 3)}


def rate(count: int, first: float | None, last: float | None) -> float | None:
    """Events per second between the first and the last of ``count`` events (None below two)."""
    if count < 2 or first is None or last is None or last <= first:
        return None
    return round((count - 1) / (last - first), 3)


class Tally:
    """The run's counts and timings, each written by one stage only (so no lock is needed):
    ``arrived`` by capture, ``skipped`` by the hand-over to inference, ``inferred`` by inference,
    ``shown`` by output. Arrays, not lists: hours of 60 fps are a few MB."""

    def __init__(self) -> None:
        self.frames_in = self.frames_inferred = self.frames_skipped = self.frames_out = self.frames_masked = 0
        self.first_in: float | None = None
        self.last_in: float | None = None
        self.first_out: float | None = None
        self.last_out: float | None = None
        self.latencies_ms = array("d")
        self.mask_ages_ms = array("d")

    def arrived(self, at: float) -> None:
        self.first_in = at if self.first_in is None else self.first_in
        self.last_in = at
        self.frames_in += 1

    def skipped(self, count: int = 1) -> None:
        self.frames_skipped += count

    def inferred(self, latency_ms: float) -> None:
        self.latencies_ms.append(latency_ms)
        self.frames_inferred += 1

    def shown(self, at: float, mask_age_ms: float | None) -> None:
        self.first_out = at if self.first_out is None else self.first_out
        self.last_out = at
        self.frames_out += 1
        if mask_age_ms is not None:
            self.mask_ages_ms.append(mask_age_ms)
            self.frames_masked += 1

    def figures(self) -> dict[str, Any]:
        """The counts, rates and statistics of SUMMARY_KEYS. ``fps_in`` and ``fps_out``: the rate
        of arrivals and of frames passed on; ``fps_inferred``: frames inferred per second of
        arrivals (``fps_in`` times the share inferred)."""
        span = (self.last_in - self.first_in) if self.first_in is not None and self.last_in is not None else 0.0
        fps_in = rate(self.frames_in, self.first_in, self.last_in)
        return {"frames_in": self.frames_in, "frames_inferred": self.frames_inferred,
                "frames_skipped": self.frames_skipped, "frames_out": self.frames_out,
                "frames_masked": self.frames_masked, "fps_in": fps_in,
                "fps_inferred": round(self.frames_inferred / span, 3) if span > 0 else None,
                "fps_out": rate(self.frames_out, self.first_out, self.last_out),
                "latency_ms": stats(self.latencies_ms), "mask_age_ms": stats(self.mask_ages_ms)}

    def summary(self, header: dict[str, Any], *, complete: bool, ended_by: str | None, error: str | None = None,
                outputs: dict[str, Any] | None = None, warnings: list[str] | None = None,
                extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """summary.json: SUMMARY_KEYS first (``header`` gives source, backend, model,
        model_sha256), then ``extra``. ``complete`` is False while the run goes on and True in
        the summary written when it ended, however it ended (``ended_by`` says how)."""
        if ended_by is not None and ended_by not in ENDED_BY:
            raise ValueError(f"ended_by {ended_by!r} is not one of {ENDED_BY}")
        data: dict[str, Any] = {"format": FORMAT, "complete": complete, "ended_by": ended_by, "error": error,
                                "source": header.get("source"), "backend": header.get("backend"),
                                "model": header.get("model"), "model_sha256": header.get("model_sha256"),
                                **self.figures(), "outputs": outputs or {}, "warnings": list(warnings or [])}
        data.update({k: v for k, v in header.items() if k not in data})
        data.update(extra or {})
        return data
