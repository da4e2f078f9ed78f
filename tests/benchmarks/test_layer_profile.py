"""The per-layer profile joins ONNX Runtime's node times to the MAC count, fused Q/DQ nodes included."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest

from convseg_deploy.benchmarks.layer_profile import format_profile, group_of, profile
from convseg_deploy.hardware.peak import _conv_onnx


def _named(tmp_path: Path, quantized: bool) -> Path:
    model = _conv_onnx({"channels": 16, "kernel": 3, "size": 16}, quantized)
    for i, node in enumerate(model.graph.node):
        node.name = f"/decoder.0/branches.1/0/{node.op_type}_{i}"  # the exporter's kind of names
    path = tmp_path / f"m{int(quantized)}.onnx"
    onnx.save(model, str(path))
    return path


def test_group_names() -> None:
    assert group_of("/decoder.0/branches.1/0/Conv") == "/decoder.0/branches.1"
    assert group_of("/head/Conv") == "/head/Conv" and group_of("Transpose") == "Transpose"


def test_fused_qdq_conv_keeps_its_work(tmp_path: Path) -> None:
    for quantized in (False, True):
        result = profile(_named(tmp_path, quantized), threads=1, iters=2, peak=10.0)
        macs = 16 * 16 * 16 * 16 * 9 / 1e9
        assert result["gmac"] == round(macs, 3) and result["gmac_joined"] == result["gmac"]  # every MAC found a time
        group = next(g for g in result["groups"] if g["group"] == "/decoder.0/branches.1")
        assert group["ms"] > 0 and group["gmac"] == round(macs, 3)
        assert group["ms_lost"] == pytest.approx(group["ms"] - macs / 10.0 * 1e3, abs=0.011)  # both rounded to 0.01
        assert format_profile(result)[0].startswith(f"m{int(quantized)}.onnx:")


def test_convs_fused_with_their_relu_and_residual_add_keep_their_work(tmp_path: Path) -> None:
    """ONNX Runtime fuses Conv -> Relu into one blocked-layout Conv named after the Relu's output
    (every CFR branch of the model), and Conv -> Add -> Relu into one named after the Conv's:
    both times must carry their Conv's MACs."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    c, s = 32, 32  # each Conv 0.009 GMAC: one lost would show in the 3-decimal figures
    w = (np.random.default_rng(0).standard_normal((c, c, 3, 3)) * 0.02).astype(np.float32)
    b = "/decoder.0/branches.1"
    nodes = [helper.make_node("Conv", ["x", "w"], [f"{b}/0/Conv_output_0"], pads=[1] * 4, name=f"{b}/0/Conv"),
             helper.make_node("Relu", [f"{b}/0/Conv_output_0"], [f"{b}/1/Relu_output_0"], name=f"{b}/1/Relu"),
             helper.make_node("Conv", [f"{b}/1/Relu_output_0", "w"], [f"{b}/2/Conv_output_0"], pads=[1] * 4,
                              name=f"{b}/2/Conv"),
             helper.make_node("Add", [f"{b}/2/Conv_output_0", f"{b}/1/Relu_output_0"], [f"{b}/Add_output_0"],
                              name=f"{b}/Add"),
             helper.make_node("Relu", [f"{b}/Add_output_0"], ["y"], name=f"{b}/Relu")]
    graph = helper.make_graph(nodes, "fused", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, s, s])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, c, s, s])],
                              [numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "fused.onnx"
    onnx.save(model, str(path))
    result = profile(path, threads=1, iters=2, peak=10.0)
    macs = round(2 * c * c * s * s * 9 / 1e9, 3)
    assert result["gmac"] == macs and result["gmac_joined"] == macs
    assert next(g for g in result["groups"] if g["group"] == b)["gmac"] == macs
