"""FP32 ONNX -> FP16 ONNX: FP16 weights and compute inside, FP32 input and output.

Keeping the I/O in FP32 means every consumer feeds the same preprocessed float32 batch; the
converter inserts the casts. Ops without FP16 kernels stay in FP32 (ONNX Runtime's default
block list), which is what TensorRT's strongly typed build then honours.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from convseg_deploy.artifacts.onnx_meta import get_metadata, set_metadata
from exporters.onnx_export import save_checked


def topological_sort(graph: Any) -> None:
    """Reorder ``graph.node`` so every node follows its producers (the converter appends the
    input casts at the end, which onnx.checker rejects)."""
    known = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        ready = [n for n in pending if all(i in known for i in n.input)]
        if not ready:
            raise ValueError(f"graph has a cycle or a dangling input near node {pending[0].name!r}")
        for node in ready:
            known.update(node.output)
        ordered += ready
        pending = [n for n in pending if n not in ready]
    del graph.node[:]
    graph.node.extend(ordered)


def convert_fp16(fp32_path: str | Path, out_path: str | Path, meta_updates: dict[str, Any],
                 keep_fp32: list[str] | None = None) -> Path:
    """FP16 copy of ``fp32_path``; ``keep_fp32`` names nodes that stay FP32 (``exporters.fp16_guard``)."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(fp32_path))
    meta = {**get_metadata(model, str(fp32_path)), **meta_updates}
    half = convert_float_to_float16(model, keep_io_types=True, disable_shape_infer=False, node_block_list=keep_fp32 or None)
    topological_sort(half.graph)
    set_metadata(half, {**meta, "float_nodes": list(keep_fp32 or [])})
    return save_checked(half, out_path)
