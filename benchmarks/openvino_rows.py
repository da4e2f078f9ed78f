"""The bench rows of the OpenVINO backend: which settings of one ONNX file are worth a row.

Per ONNX file and OpenVINO device (``--providers`` cpu, gpu, npu: Intel devices):
- a latency row with f32 inference (exact: the file's own precision);
- for the fp32 file, a latency row with bf16 inference: lossy, so a row of its own, gated by
  mask agreement like any other precision (skipped with the reason where the device lacks BF16);
- a throughput row: the throughput hint with several infer requests in flight, reported as
  images per second over the wall time with each request's latency (``benchmarks.throughput``).
Its provider reads ``cpu-throughput`` so that it never shares a label with the latency row.
"""

from __future__ import annotations

from pathlib import Path

from convseg_deploy.benchmarks.row import Row
from convseg_deploy.runtime.openvino_runner import DEVICES, precision_label

THROUGHPUT_SUFFIX = "-throughput"


def _row(path: Path, precision: str, device: str, hint: str, inference: str, batch_size: int) -> Row:
    provider = device + (THROUGHPUT_SUFFIX if hint == "throughput" else "")
    options = (("device", device), ("hint", hint), ("inference_precision", inference))
    return Row("openvino", provider, precision_label(precision, inference), path, batch_size, options=options)


def openvino_rows(onnx: list[tuple[Path, str]], providers: list[str], batch_sizes: list[int]) -> list[Row]:
    """Rows for every (file, precision guess) in ``onnx`` on every OpenVINO device among ``providers``."""
    rows = []
    for path, precision in onnx:
        for device in (p for p in providers if p in DEVICES):
            variants = [("latency", "f32")] + ([("latency", "bf16")] if precision == "fp32" else [])
            variants.append(("throughput", "f32"))
            rows += [_row(path, precision, device, hint, inference, bs) for hint, inference in variants for bs in batch_sizes]
    return rows


def is_throughput(row: Row) -> bool:
    return dict(row.options).get("hint") == "throughput"
