"""PyTorch -> FP32 ONNX, with the convseg_deploy metadata attached and the model checked."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from convseg_deploy.artifacts.names import INPUT_NAME, OUTPUT_NAME
from convseg_deploy.errors import ConvSegError
from convseg_deploy.fsutil import atomic_path
from convseg_deploy.artifacts.onnx_meta import set_metadata

DEFAULT_OPSET = 17
MIN_OPSET = 13  # per-channel Q/DQ needs 13
MAX_OPSET = 20  # ONNX Runtime's static INT8 quantization does not support 21+


def run_onnx(path: str | Path, frames: Any, threads: int | None, batch: int = 8, *, reference_qdq: bool = False) -> Any:
    """Logits (N x 1 x H x W float32) of an exported file on RGB uint8 ``frames``, preprocessed
    with the file's own metadata, in a CPU session (``convseg_deploy.ort_session``; see there for
    ``reference_qdq``)."""
    import numpy as np

    from convseg_deploy.artifacts.onnx_meta import preprocess_from_metadata, read_metadata
    from convseg_deploy.batching import iter_batches
    from convseg_deploy.imaging import preprocess
    from convseg_deploy.ort_session import cpu_session

    spec, _ = preprocess_from_metadata(read_metadata(path), str(path))
    session = cpu_session(path, threads, reference_qdq=reference_qdq)
    return np.concatenate([session.run([OUTPUT_NAME], {INPUT_NAME: preprocess(frames[sl], spec)})[0]
                           for sl in iter_batches(len(frames), batch)])


def check_opset(opset: int) -> int:
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise ConvSegError(f"opset {opset} is not supported: use {MIN_OPSET} to {MAX_OPSET} "
                           f"(ONNX Runtime's INT8 quantization stops at {MAX_OPSET}); the default is {DEFAULT_OPSET}")
    return opset


def save_checked(model: Any, path: str | Path) -> Path:
    """Run the full ONNX checker, then write the model atomically."""
    import onnx

    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ConvSegError(f"the ONNX model for {Path(path).name} fails onnx.checker: {str(exc).splitlines()[0]}") from None
    with atomic_path(path) as tmp:
        onnx.save(model, str(tmp))
    return Path(path)


def export_fp32(model: Any, path: str | Path, size: tuple[int, int], meta: dict[str, Any], *, opset: int = DEFAULT_OPSET,
                dynamic_batch: bool = True, dynamic_size: bool = False) -> Path:
    """Trace ``model`` (a ConvSegNet in eval mode, on the CPU) to ``path`` with input ``image``
    (N x 3 x H x W float32) and output ``logits`` (N x 1 x H x W float32)."""
    import onnx
    import torch

    check_opset(opset)
    axes: dict[int, str] = {}
    if dynamic_batch:
        axes[0] = "batch"
    if dynamic_size:
        axes.update({2: "height", 3: "width"})
    dummy = torch.zeros(1, 3, *size)
    with atomic_path(path) as traced, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about Python-side shape checks
        # The TorchScript-based exporter: deterministic, fast and fine for a static conv net.
        torch.onnx.export(model.cpu().eval(), (dummy,), str(traced), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          opset_version=opset, dynamic_axes={INPUT_NAME: axes, OUTPUT_NAME: axes} if axes else None,
                          do_constant_folding=True, dynamo=False)
        proto = onnx.load(str(traced))
    fold_initializer_identities(proto.graph)
    set_metadata(proto, meta)
    return save_checked(proto, path)


def fold_initializer_identities(graph: Any) -> None:
    """Replace ``Identity(initializer)`` nodes, which the tracer emits for shared constants, by
    initializers of their own: the quantizer needs Conv biases to be initializers."""
    from onnx import numpy_helper

    inits = {t.name: t for t in graph.initializer}
    graph_outputs = {o.name for o in graph.output}
    keep = []
    for node in graph.node:
        if node.op_type == "Identity" and node.input[0] in inits and node.output[0] not in graph_outputs:
            graph.initializer.append(numpy_helper.from_array(numpy_helper.to_array(inits[node.input[0]]), node.output[0]))
        else:
            keep.append(node)
    del graph.node[:]
    graph.node.extend(keep)
