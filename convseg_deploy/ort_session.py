"""ONNX Runtime session settings, shared by everything that runs an ONNX file: the runtime's
runner, the export's checks and calibration, and the benchmarks' bare reference loop.

Building (``exporters``) and running (``convseg_deploy.runtime``) never import each other; both
take their sessions from here, so a check at export time runs a file the way ``predict`` does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from convseg_deploy.errors import ConvSegError


def session_options(threads: int | None, *, reference_qdq: bool = False, spin: bool = True,
                    ) -> Any:  # -> onnxruntime.SessionOptions
    """All graph optimisations, ``threads`` intra-op threads (None: ONNX Runtime's default).

    ``spin``: ONNX Runtime's intra-op workers busy-wait for the next parallel section (its
    default: the fastest model when nothing else runs). False makes them sleep instead
    (``session.intra_op.allow_spinning`` = 0), so other threads of the process (video decoding and
    encoding in ``live``) get the cores between and within inferences without preempting a worker
    that the others then wait for.

    ``reference_qdq``: run QuantizeLinear/DequantizeLinear as the ONNX spec defines them (round,
    saturate, rescale; weight DequantizeLinears folded into float weights once) instead of handing
    Q/DQ groups to ONNX Runtime's INT8 CPU kernels. Both compute the same quantized model up to
    float rounding (which can move an occasional value across a rounding boundary). The export
    checks the ``int8`` (TensorRT) file this way: its convolutions have no output QuantizeLinear,
    so the CPU kernels do not fit it, and the reference run is faster (1.06 against 1.45 s per
    256x256 frame for the resnet50 model, batch 8, 2-core Xeon).
    """
    import onnxruntime as ort

    if threads is not None and threads < 1:
        raise ConvSegError(f"thread count must be at least 1, got {threads}")
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    opts.log_severity_level = 3  # keep ORT's warnings about unused initialisers off the terminal
    if reference_qdq:
        opts.add_session_config_entry("session.disable_quant_qdq", "1")
    if not spin:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return opts


def cpu_session(model: str | Path | bytes, threads: int | None, *, reference_qdq: bool = False,
                ) -> Any:  # -> onnxruntime.InferenceSession
    """A CPU session of an ONNX file (or a serialized model) with ``session_options``."""
    import onnxruntime as ort

    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, sess_options=session_options(threads, reference_qdq=reference_qdq),
                                providers=["CPUExecutionProvider"])


def run_variant(path: str | Path, frames: Any, threads: int | None = None, batch: int = 8) -> Any:  # -> bool N x H x W
    """Masks of an I/O variant file (``frames``, ``holoscan``, ``deepstream``; see
    ``artifacts.io_variants``) on uint8 RGB frames at its size, fed as its framework feeds it
    and read as its framework reads it, in a CPU session."""
    import numpy as np

    from convseg_deploy.artifacts.io_variants import feed, io_of, masks_from_outputs, variant
    from convseg_deploy.artifacts.onnx_meta import preprocess_from_metadata, read_metadata
    from convseg_deploy.batching import iter_batches

    meta = read_metadata(path)
    io = io_of(meta)
    _, threshold = preprocess_from_metadata(meta, str(path))
    spec = variant(io)
    session = cpu_session(path, threads)
    names = [o.name for o in session.get_outputs()]
    masks = []
    for sl in iter_batches(len(frames), batch):
        outputs = dict(zip(names, session.run(names, {spec.input: feed(io, frames[sl])})))
        masks.append(masks_from_outputs(io, outputs, threshold))
    return np.concatenate(masks)
