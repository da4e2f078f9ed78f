"""ONNX Runtime session settings: ``reference_qdq`` computes Q/DQ as the ONNX spec defines them."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from convseg_deploy.ort_session import cpu_session


def _qdq_conv(x_scale: float, w_int8: np.ndarray, w_scales: np.ndarray) -> bytes:
    """x -> QuantizeLinear -> DequantizeLinear -> Conv(1x1, DequantizeLinear(INT8 weight, per
    channel)) -> y: the shape of every INT8 convolution in ModelOpt's int8 file."""
    inits = [numpy_helper.from_array(np.array(x_scale, np.float32), "xs"), numpy_helper.from_array(np.array(0, np.int8), "xz"),
             numpy_helper.from_array(w_int8, "wq"), numpy_helper.from_array(w_scales.astype(np.float32), "ws"),
             numpy_helper.from_array(np.zeros(len(w_scales), np.int8), "wz")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"]),
             helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["w"], axis=0),
             helper.make_node("Conv", ["xd", "w"], ["y"])]
    graph = helper.make_graph(nodes, "qdq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 5, 5])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def test_reference_qdq_computes_what_the_onnx_spec_defines() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 8, 5, 5)).astype(np.float32)
    w_int8 = rng.integers(-127, 128, (4, 8, 1, 1)).astype(np.int8)
    w_scales = rng.uniform(0.001, 0.01, 4)
    x_scale = 0.021
    y = cpu_session(_qdq_conv(x_scale, w_int8, w_scales), 1, reference_qdq=True).run(None, {"x": x})[0]
    # the spec: round half to even, saturate to [-128, 127], rescale; INT8 products summed exactly
    xq = np.clip(np.rint(x / np.float32(x_scale)), -128, 127)
    expected = np.einsum("nchw,oc->nohw", xq.astype(np.float64) * x_scale,
                         w_int8[:, :, 0, 0].astype(np.float64) * w_scales.astype(np.float32)[:, None])
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)
    unquantized = np.einsum("nchw,oc->nohw", x.astype(np.float64), w_int8[:, :, 0, 0] * w_scales[:, None])
    assert np.abs(y - unquantized).max() > 1e-3  # the activations were rounded, not passed through

