"""Work per frame: the multiply-accumulates (MACs) of an ONNX model's Conv, ConvTranspose, MatMul
and Gemm nodes at its input size, counted from the graph after shape inference.

The one place that counts MACs: ``bench`` (GMAC per frame, achieved GMAC/s, efficiency), the
peak probe (the work of its kernels) and ``benchmarks.cpu_targets`` (the per-layer profile) read it.
A Q/DQ INT8 graph counts the same as its float graph: its weights reach the Conv through a
DequantizeLinear whose output shape inference knows, and the arithmetic is the same. Other ops
(activations, pooling, resizes, adds) are memory-bound and negligible beside these in ConvSegNet.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from math import prod
from pathlib import Path
from typing import Any

from convseg_deploy.errors import ConvSegError

# The quantized ops ONNX Runtime's own quantizer writes count as their float ops; index of the
# weight (B) input of each.
_WEIGHT_INPUT = {"Conv": 1, "ConvTranspose": 1, "ConvInteger": 1, "QLinearConv": 3,
                 "MatMul": 1, "MatMulInteger": 1, "QLinearMatMul": 3, "Gemm": 1}
_DATA_INPUT = {"QLinearConv": 0, "QLinearMatMul": 0}  # the others: input 0 as well
COUNTED_OPS = tuple(_WEIGHT_INPUT)


@dataclass
class MacCount:
    """MACs of one frame (batch 1): in total, per op type and per node (in graph order)."""

    total: int = 0
    by_op: dict[str, int] = field(default_factory=dict)
    by_node: dict[str, int] = field(default_factory=dict)
    input_shape: list[int] = field(default_factory=list)

    @property
    def gmac(self) -> float:
        return self.total / 1e9


def node_macs(op: str, data: list[int], weight: list[int], out: list[int], attrs: dict[str, Any]) -> int:
    """MACs of one node from its data-input, weight and output shapes."""
    if op in ("Conv", "ConvInteger", "QLinearConv"):
        # every output value: (C_in / groups) x kernel multiply-adds; weights O x C_in/g x k...
        # (stride, pads and dilation act through the output's shape, groups through the weight's)
        return prod(out) * prod(weight[1:])
    if op == "ConvTranspose":
        # every input value scatters into (C_out / groups) x kernel outputs; weights C_in x C_out/g x k...
        return prod(data) * prod(weight[1:])
    if op in ("MatMul", "MatMulInteger", "QLinearMatMul"):
        return prod(out) * data[-1]  # [..., M, K] @ [..., K, N] -> [..., M, N]
    if op == "Gemm":
        k = data[0] if attrs.get("transA", 0) else data[1]
        return prod(out) * k
    raise ValueError(op)


def _known(shape: Iterable[Any]) -> list[int] | None:
    dims = list(shape)
    return dims if dims and all(isinstance(d, int) and d > 0 for d in dims) else None


def count_macs(model_or_path: Any, input_size: tuple[int, int] | None = None) -> MacCount:
    """MACs per frame of an ONNX model (a path or a ``ModelProto``) at its own input size
    (``input_size`` (H, W) overrides the spatial dims of 4-D inputs); a dynamic batch counts as 1."""
    import onnx
    from onnx import helper, shape_inference

    where = str(model_or_path) if isinstance(model_or_path, (str, Path)) else "the model"
    try:
        model = onnx.load(str(model_or_path)) if isinstance(model_or_path, (str, Path)) else model_or_path
    except Exception as exc:  # noqa: BLE001 - not ONNX, unreadable: one line for the user
        raise ConvSegError(f"cannot count the MACs of {where}: it does not load as ONNX ({exc})") from None
    model = onnx.ModelProto.FromString(model.SerializeToString())  # fixing dims must not change the caller's
    inits = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    for value in inputs:
        dims = value.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].Clear()
            dims[0].dim_value = 1  # a dynamic batch counts at 1: MACs per frame
        if input_size and len(dims) == 4:
            for dim, size in zip(dims[2:], input_size):
                dim.Clear()
                dim.dim_value = int(size)
        if any(not d.HasField("dim_value") for d in dims):
            raise ConvSegError(f"cannot count the MACs of {where}: input {value.name!r} has a dynamic size "
                               f"({[d.dim_param or d.dim_value for d in dims]}); give the input size (H W)")
    inferred = shape_inference.infer_shapes(model, data_prop=True)
    shapes: dict[str, list[int]] = {t.name: list(t.dims) for t in inferred.graph.initializer}
    for value in (*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output):
        if value.type.HasField("tensor_type"):
            shapes[value.name] = [d.dim_value if d.HasField("dim_value") else -1
                                  for d in value.type.tensor_type.shape.dim]
    count = MacCount(input_shape=shapes.get(inputs[0].name, []) if inputs else [])
    for i, node in enumerate(inferred.graph.node):
        if node.op_type not in _WEIGHT_INPUT:
            continue
        data = _known(shapes.get(node.input[_DATA_INPUT.get(node.op_type, 0)], []))
        weight = _known(shapes.get(node.input[_WEIGHT_INPUT[node.op_type]], []))
        out = _known(shapes.get(node.output[0], []))
        if data is None or weight is None or out is None:
            raise ConvSegError(f"cannot count the MACs of {where}: shape inference left the shapes of "
                               f"{node.op_type} node {node.name or i!r} unknown")
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        macs = node_macs(node.op_type, data, weight, out, attrs)
        count.total += macs
        count.by_op[node.op_type] = count.by_op.get(node.op_type, 0) + macs
        count.by_node[node.name or f"{node.op_type}_{i}"] = macs
    batch = count.input_shape[0] if len(count.input_shape) == 4 else 1
    if batch > 1:  # a file exported with a fixed batch of N frames: per frame is 1/N of it
        count.total //= batch
        count.by_op = {k: v // batch for k, v in count.by_op.items()}
        count.by_node = {k: v // batch for k, v in count.by_node.items()}
    return count
