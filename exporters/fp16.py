"""FP32 ONNX -> FP16 ONNX: FP16 weights and compute inside, FP32 input and output.

Keeping the I/O in FP32 means every consumer feeds the same preprocessed float32 batch; the
converter inserts the casts. Ops without FP16 kernels stay in FP32 (ONNX Runtime's default
block list), which is what TensorRT's strongly typed build then honours.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from convseg_deploy.artifacts.onnx_meta import get_metadata, set_metadata
from convseg_deploy.exporters.onnx_export import save_checked


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


def skip_fp16_round_trips(graph: Any, kept: set[str]) -> int:
    """Let FP32 nodes read each other's outputs directly; returns how many round trips were removed.

    The converter casts every blocked node's output to FP16 and back to FP32 for the next blocked
    node, so a value kept FP32 because it exceeds the FP16 range still overflows in between. A
    Cast(to FP16) -> Cast(to FP32) pair whose source is a kept node's output is bypassed here
    (exactly the FP32 value, no rounding); casts nothing reads any more are dropped.
    """
    from onnx import TensorProto

    def cast_to(node: Any) -> int | None:
        return next((a.i for a in node.attribute if a.name == "to"), None) if node.op_type == "Cast" else None

    producers = {out: node for node in graph.node for out in node.output}
    bypass = {}
    for node in graph.node:
        first = producers.get(node.input[0]) if cast_to(node) == TensorProto.FLOAT else None
        if first is not None and cast_to(first) == TensorProto.FLOAT16:
            source = producers.get(first.input[0])
            if source is not None and source.name in kept:
                bypass[node.output[0]] = first.input[0]
    outputs = {o.name for o in graph.output}
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in bypass:
                node.input[i] = bypass[name]
    while True:  # drop casts whose outputs nothing reads
        read = {name for node in graph.node for name in node.input} | outputs
        dead = [n for n in graph.node if n.op_type == "Cast" and not any(o in read for o in n.output)]
        if not dead:
            produced = {out for node in graph.node for out in node.output}
            stale = [v for v in graph.value_info if v.name not in produced]
            for value in stale:
                graph.value_info.remove(value)
            return len(bypass)
        for node in dead:
            graph.node.remove(node)


def convert_fp16(fp32_path: str | Path, out_path: str | Path, meta_updates: dict[str, Any],
                 keep_fp32: list[str] | None = None) -> Path:
    """FP16 copy of ``fp32_path``; ``keep_fp32`` names nodes that stay FP32 (``exporters.fp16_guard``)."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(fp32_path))
    meta = {**get_metadata(model, str(fp32_path)), **meta_updates}
    half = convert_float_to_float16(model, keep_io_types=True, disable_shape_infer=False, node_block_list=keep_fp32 or None)
    if keep_fp32:
        skip_fp16_round_trips(half.graph, set(keep_fp32))
    topological_sort(half.graph)
    set_metadata(half, {**meta, "float_nodes": list(keep_fp32 or [])})
    return save_checked(half, out_path)
