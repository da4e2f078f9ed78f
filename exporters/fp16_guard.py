"""FP16 that does not overflow: find the nodes whose activations come near the FP16 range.

Segmentation networks can carry large activations (unnormalised decoder sums, wide dilated
convolutions); in FP16 one value above 65504 becomes inf, and a mask of NaN follows. TensorRT's
strongly typed build runs each node in the precision the ONNX file gives it, so the cure lives in
the file: nodes that write such values, and the nodes that read them, stay FP32 in
``model.fp16.onnx``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from convseg_deploy.artifacts.names import INPUT_NAME

FP16_MAX = 65504.0
# Keep a node FP32 when its largest activation over the frames reaches 1/8 of the FP16 range:
# frames the export never saw may run a few times higher than the calibration frames did.
FP16_HEADROOM = 8.0
FP16_LIMIT = FP16_MAX / FP16_HEADROOM


def activation_peaks(fp32_path: Path, batches: Sequence[np.ndarray], threads: int | None) -> dict[str, float]:
    """The largest absolute value of every float tensor a node writes, over ``batches`` (inf where
    FP32 itself overflows or gives NaN)."""
    import onnx

    from convseg_deploy.ort_session import cpu_session

    model = onnx.shape_inference.infer_shapes(onnx.load(str(fp32_path)))
    graph = model.graph
    outputs = {o.name for o in graph.output}
    floats = [v for v in graph.value_info if v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT and v.name not in outputs]
    graph.output.extend(floats)
    session = cpu_session(model.SerializeToString(), threads)
    names = [o.name for o in session.get_outputs()]
    peaks = dict.fromkeys(names, 0.0)
    for batch in batches:
        for name, value in zip(names, session.run(names, {INPUT_NAME: batch})):
            peak = float(np.max(np.abs(value))) if value.size else 0.0
            peaks[name] = max(peaks[name], peak if np.isfinite(peak) else float("inf"))
    return peaks


def overflow_nodes(model: Any, peaks: dict[str, float], limit: float = FP16_LIMIT) -> list[str]:
    """Nodes to keep FP32: those writing a tensor whose peak reaches ``limit``, and their readers."""
    hot = {name for name, peak in peaks.items() if not peak < limit}
    return [n.name for n in model.graph.node if hot & (set(n.output) | set(n.input))]
