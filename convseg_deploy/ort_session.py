"""ONNX Runtime session settings, shared by everything that runs an ONNX file: the runtime's
runner, the export's checks and calibration, and the benchmarks' bare reference loop.

Building (``exporters``) and running (``convseg_deploy.runtime``) never import each other; both
take their sessions from here, so a check at export time runs a file the way ``predict`` does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from convseg_deploy.errors import ConvSegError


def session_options(threads: int | None) -> Any:  # -> onnxruntime.SessionOptions
    """All graph optimisations, ``threads`` intra-op threads (None: ONNX Runtime's default)."""
    import onnxruntime as ort

    if threads is not None and threads < 1:
        raise ConvSegError(f"thread count must be at least 1, got {threads}")
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    opts.log_severity_level = 3  # keep ORT's warnings about unused initialisers off the terminal
    return opts


def cpu_session(model: str | Path | bytes, threads: int | None) -> Any:  # -> onnxruntime.InferenceSession
    """A CPU session of an ONNX file (or a serialized model) with ``session_options``."""
    import onnxruntime as ort

    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, sess_options=session_options(threads), providers=["CPUExecutionProvider"])
