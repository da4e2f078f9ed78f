"""Latency from Holoscan's data-flow tracking (``holoscan.core.Tracker``).

The Tracker stamps every message at each operator on its path; with logging on it writes one
entry per message that reached the end of a path::

    1:
    (frames,t0,t1) -> (segment,t2,t3) -> (writer,t4,t5)

(microseconds on one clock: each operator's receive and publish/end). A message's end-to-end
latency is its last stamp minus its first, which is what the Tracker's own min/avg/max
(``DataFlowMetric``) are computed from; here each message's value is kept, so the summary gets
the percentiles ``live`` reports. Both figures go into the summary: ``latency_ms`` from the log,
``holoscan_tracker`` with the Tracker's own metrics per path, the one a check of the other.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

_STAMP = re.compile(r"\(([^,()]+),(\d+),(\d+)\)")


def flow_latencies(log: Path) -> dict[str, list[float]]:
    """Per path ("frames,segment,writer"), the end-to-end latency in ms of each logged message."""
    paths: dict[str, list[float]] = {}
    if not log.is_file():
        return paths
    for line in log.read_text().splitlines():
        stamps = _STAMP.findall(line)
        if len(stamps) < 2:
            continue
        path = ",".join(name for name, _, _ in stamps)
        paths.setdefault(path, []).append((int(stamps[-1][2]) - int(stamps[0][1])) / 1000.0)
    return paths


def tracker_metrics(tracker: Any) -> dict[str, dict[str, float]]:
    """The Tracker's own figures per path: min/avg/max end-to-end latency (ms) and messages."""
    from holoscan.core import DataFlowMetric

    names = {"min_ms": DataFlowMetric.MIN_E2E_LATENCY, "avg_ms": DataFlowMetric.AVG_E2E_LATENCY,
             "max_ms": DataFlowMetric.MAX_E2E_LATENCY, "messages": DataFlowMetric.NUM_DST_MESSAGES}
    return {path: {key: round(float(tracker.get_metric(path, metric)), 3) for key, metric in names.items()}
            for path in tracker.get_path_strings()}
