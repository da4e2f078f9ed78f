"""MAC counts of small graphs built with onnx.helper, each checked against a hand computation."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from convseg_deploy.artifacts.macs import count_macs
from convseg_deploy.errors import ConvSegError


def _model(nodes, inputs, outputs, inits=()):
    graph = helper.make_graph(nodes, "g", inputs, outputs, [numpy_helper.from_array(a, n) for n, a in inits])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _input(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def test_conv_with_groups_dilation_stride_and_pads():
    # 8 -> 12 channels in 4 groups (2 input channels per group), 3x3 kernel, dilation 2, stride 2, pads 1
    # on a 16x20 input: effective kernel 5, output (16 + 2 - 5) // 2 + 1 = 7 by (20 + 2 - 5) // 2 + 1 = 9.
    w = np.zeros((12, 2, 3, 3), np.float32)
    node = helper.make_node("Conv", ["x", "w"], ["y"], group=4, dilations=[2, 2], strides=[2, 2], pads=[1, 1, 1, 1])
    model = _model([node], [_input("x", ["N", 8, 16, 20])], [_input("y", None)], [("w", w)])
    count = count_macs(model)
    assert count.total == 12 * 7 * 9 * 2 * 3 * 3  # out C x out H x out W x (C_in / groups) x kernel = 13608
    assert count.by_op == {"Conv": 13608}
    assert count.input_shape == [1, 8, 16, 20]  # dynamic batch counted at 1: MACs per frame


def test_input_size_overrides_the_spatial_dims():
    w = np.zeros((4, 3, 1, 1), np.float32)
    model = _model([helper.make_node("Conv", ["x", "w"], ["y"])], [_input("x", [1, 3, "H", "W"])], [_input("y", None)],
                   [("w", w)])
    assert count_macs(model, input_size=(10, 6)).total == 4 * 10 * 6 * 3
    with pytest.raises(ConvSegError, match="dynamic size"):
        count_macs(model)


def test_conv_transpose():
    # 6 -> 4 channels, 2 groups, kernel 2x3, stride 2 on 5x7: every input value scatters to
    # (C_out / groups) x kernel = 2 x 6 outputs: 6 x 5 x 7 x 2 x 6 MACs.
    w = np.zeros((6, 2, 2, 3), np.float32)
    node = helper.make_node("ConvTranspose", ["x", "w"], ["y"], group=2, strides=[2, 2])
    model = _model([node], [_input("x", [1, 6, 5, 7])], [_input("y", None)], [("w", w)])
    assert count_macs(model).total == 6 * 5 * 7 * 2 * 6 == 2520


def test_matmul_batched_and_gemm_transposed():
    # MatMul [2, 3, 5] @ [5, 7] -> [2, 3, 7]: 2 x 3 x 7 x 5; Gemm with transA: A is [K=5, M=4], B [5, 9].
    b = np.zeros((5, 7), np.float32)
    gb = np.zeros((5, 9), np.float32)
    nodes = [helper.make_node("MatMul", ["a", "b"], ["m"]),
             helper.make_node("Gemm", ["ga", "gb"], ["g"], transA=1)]
    model = _model(nodes, [_input("a", [2, 3, 5]), _input("ga", [5, 4])], [_input("m", None), _input("g", None)],
                   [("b", b), ("gb", gb)])
    count = count_macs(model)
    assert count.by_op == {"MatMul": 2 * 3 * 7 * 5, "Gemm": 4 * 9 * 5}
    assert count.total == 210 + 180


def test_qdq_graph_counts_like_its_float_graph():
    # The INT8 files' weights reach the Conv through DequantizeLinear, not as an initializer.
    wq = np.zeros((16, 3, 3, 3), np.int8)
    scale = np.full(16, 0.1, np.float32)
    zero = np.zeros(16, np.int8)
    nodes = [helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"]),
             helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["wd"], axis=0),
             helper.make_node("Conv", ["xd", "wd"], ["y"], pads=[1, 1, 1, 1])]
    inits = [("wq", wq), ("ws", scale), ("wz", zero), ("xs", np.float32(0.02)), ("xz", np.uint8(128))]
    qdq = _model(nodes, [_input("x", [1, 3, 8, 8])], [_input("y", None)], inits)
    float_model = _model([helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])], [_input("x", [1, 3, 8, 8])],
                         [_input("y", None)], [("w", np.zeros((16, 3, 3, 3), np.float32))])
    assert count_macs(qdq).total == count_macs(float_model).total == 16 * 8 * 8 * 3 * 9


def test_not_onnx_is_one_line_error(tmp_path):
    bad = tmp_path / "model.onnx"
    bad.write_text("not a model")
    with pytest.raises(ConvSegError, match="model.onnx.*does not load as ONNX"):
        count_macs(bad)


def test_fixed_batch_counts_per_frame():
    w = np.zeros((4, 3, 1, 1), np.float32)
    model = _model([helper.make_node("Conv", ["x", "w"], ["y"])], [_input("x", [2, 3, 5, 5])], [_input("y", None)],
                   [("w", w)])
    assert count_macs(model).total == 4 * 5 * 5 * 3  # two frames per call, counted per frame


def test_from_a_file(tmp_path):
    # image (N,3,32,32) -> Conv 8x3x5x5 pad 2 -> Conv 4x8x1x1: 32 x 32 x (8 x 3 x 25 + 4 x 8) MACs per frame
    import onnx

    nodes = [helper.make_node("Conv", ["image", "w1"], ["h"], name="c1", pads=[2, 2, 2, 2]),
             helper.make_node("Conv", ["h", "w2"], ["logits"], name="c2")]
    model = _model(nodes, [_input("image", ["batch", 3, 32, 32])], [_input("logits", ["batch", 4, 32, 32])],
                   [("w1", np.zeros((8, 3, 5, 5), np.float32)), ("w2", np.zeros((4, 8, 1, 1), np.float32))])
    onnx.save(model, str(tmp_path / "m.onnx"))
    count = count_macs(tmp_path / "m.onnx")
    assert count.by_node == {"c1": 32 * 32 * 8 * 3 * 25, "c2": 32 * 32 * 4 * 8}
    assert count.gmac == pytest.approx(32 * 32 * (8 * 3 * 25 + 4 * 8) / 1e9)
