"""Each bench row against the machine's own limit: GMAC per frame, achieved GMAC/s, efficiency.

``gmac_per_frame`` is the MAC count of the row's ONNX file at the row's input size
(``convseg_deploy.artifacts.macs``). Rows without an ONNX file of their own (PyTorch, TensorRT
engines, Triton) run the same model: they take the count of an ONNX row of the run at the same
input size. ``gmac_per_s`` is that times the row's model-only images per second, and
``efficiency`` is that over the measured peak of the row's precision (``hardware.peak.summary``): CPU rows
against the CPU's peak, CUDA rows against the GPU's where the probe measured one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from convseg_deploy.errors import ConvSegError
from convseg_deploy.hardware.peak import precision_class

Result = dict[str, Any]
COLUMNS = ("gmac_per_frame", "gmac_per_s", "efficiency")
CPU_PROVIDERS = ("cpu", "cpu-throughput")
GPU_PROVIDERS = ("cuda", "tensorrt")


def _size(row: Result) -> tuple[int, ...] | None:
    return tuple(row["input_size"]) if row.get("input_size") else None


def work_per_frame(results: list[Result]) -> dict[tuple[str, tuple[int, ...] | None], float]:
    """GMAC per frame of every ONNX file of the run, at each input size its rows ran at."""
    from convseg_deploy.artifacts.macs import count_macs

    counted: dict[tuple[str, tuple[int, ...] | None], float] = {}
    for row in results:
        artifact, size = row.get("artifact"), _size(row)
        if row["status"] != "ok" or not artifact or Path(artifact).suffix != ".onnx" or (artifact, size) in counted:
            continue
        try:
            counted[(artifact, size)] = count_macs(artifact, input_size=size[-2:] if size else None).gmac
        except ConvSegError:
            continue  # a file whose shapes cannot be inferred: its row shows no efficiency, the bench goes on
    return counted


def row_peak(row: Result, peak: dict[str, Any] | None) -> float | None:
    """The measured peak GMAC/s the row is judged against (``peak``: the probe's ``summary``);
    None where the probe has none for its device and precision."""
    if peak is None:
        return None
    precision = precision_class(row["precision"]) or ""
    if row["provider"] in CPU_PROVIDERS:
        return peak["measured"].get(precision)
    if row["provider"] in GPU_PROVIDERS:
        return peak["gpu"].get(precision)
    return None


def add_efficiency(results: list[Result], peak: dict[str, Any] | None,
                   work: dict[tuple[str, tuple[int, ...] | None], float] | None = None) -> list[Result]:
    """``results`` with ``gmac_per_frame``, ``gmac_per_s``, ``efficiency`` and ``peak_gmac_per_s``
    on every row (None where not measurable); ``work`` defaults to counting the run's ONNX files."""
    work = work_per_frame(results) if work is None else work
    by_size: dict[tuple[int, ...] | None, float] = {}
    for (_, size), gmac in work.items():
        by_size.setdefault(size, gmac)
    out = []
    for row in results:
        gmac = work.get((row.get("artifact") or "", _size(row)), by_size.get(_size(row)))
        ok = row["status"] == "ok" and gmac is not None and row.get("fps")
        rate = gmac * row["fps"] if ok else None
        limit = row_peak(row, peak) if ok else None
        out.append({**row, "gmac_per_frame": round(gmac, 6) if ok else None,
                    "gmac_per_s": round(rate, 1) if rate is not None else None,
                    "peak_gmac_per_s": limit,
                    "efficiency": round(rate / limit, 3) if rate is not None and limit else None})
    return out
