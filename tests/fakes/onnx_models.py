"""Tiny ONNX models for tests: real files that onnx, onnxruntime and TensorRT can all load."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from convseg_deploy.config import PreprocessSpec
from convseg_deploy.artifacts.onnx_meta import set_metadata

# A 1x1 convolution 3 -> 1 with fixed weights, so outputs can be checked by hand.
TINY_WEIGHTS = np.array([0.5, -0.25, 1.0], dtype=np.float32)
TINY_BIAS = np.float32(0.125)


def tiny_reference(batch: np.ndarray) -> np.ndarray:
    """What the tiny model computes for an N x 3 x H x W batch (N x 1 x H x W logits)."""
    out = np.tensordot(batch.astype(np.float32), TINY_WEIGHTS, axes=([1], [0])) + TINY_BIAS
    return out[:, None, :, :].astype(np.float32)


def tiny_onnx(
    path: str | os.PathLike,
    size: int = 64,
    dynamic_size: bool = False,
    precision: str = "fp16",
    threshold: float = 0.5,
) -> Path:
    """Write a Conv 3->1 1x1 model (input ``image`` N x 3 x size x size, output ``logits``).

    The batch is always dynamic (``N``); ``dynamic_size`` makes H and W dynamic too. The file
    carries the project's ``convseg_deploy`` metadata so that every consumer can read it.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    hw: list[int | str] = ["H", "W"] if dynamic_size else [size, size]
    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, *hw])
    logits = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 1, *hw])
    weight = numpy_helper.from_array(TINY_WEIGHTS.reshape(1, 3, 1, 1), name="head.weight")
    bias = numpy_helper.from_array(np.array([TINY_BIAS], dtype=np.float32), name="head.bias")
    conv = helper.make_node("Conv", ["image", "head.weight", "head.bias"], ["logits"], name="head/Conv")
    graph = helper.make_graph([conv], "tiny_convseg", [image], [logits], initializer=[weight, bias])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="convseg-deploy-tests")
    model.ir_version = 8  # readable by older onnxruntime and TensorRT parsers
    onnx.checker.check_model(model)
    meta = {
        "preprocess": PreprocessSpec(size=(size, size)).to_dict(),
        "threshold": threshold,
        "precision": precision,
    }
    set_metadata(model, meta)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def mean_onnx(path: Path, precision: str = "fp16") -> Path:
    """A 1x1 Conv that averages the channels: what the fake TensorRT engine computes."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, 64, 64])
    logits = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 1, 64, 64])
    weight = numpy_helper.from_array(np.full((1, 3, 1, 1), 1 / 3, np.float32), name="w")
    conv = helper.make_node("Conv", ["image", "w"], ["logits"], name="head/Conv")
    graph = helper.make_graph([conv], "mean", [image], [logits], initializer=[weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    # mean 0.6 everywhere: the reference frame's channel mean lands on both sides of 0, so masks are not trivial
    spec = PreprocessSpec(size=(64, 64), mean=(0.6, 0.6, 0.6), std=(0.25, 0.25, 0.25))
    set_metadata(model, {"preprocess": spec.to_dict(), "threshold": 0.5, "precision": precision})
    onnx.save(model, str(path))
    return path


def slow_onnx(path: str | os.PathLike, size: int = 64, channels: int = 128, layers: int = 16, seed: int = 0) -> Path:
    """Write a model that is slow by real compute: ``layers`` 3x3 convolutions of ``channels``
    channels at full resolution (``size``; about 9.7 GMAC per frame at the defaults, so around 100
    ms or more on two cores of any of the project's CPUs), ReLUs between them and a 1x1 head to
    one logit map. The project's metadata makes it runnable by every consumer; its masks mean
    nothing (random weights)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, size, size])
    logits = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 1, size, size])
    nodes, weights, previous, width = [], [], "image", 3
    for i in range(layers):
        w = rng.normal(0, (2.0 / (9 * width)) ** 0.5, (channels, width, 3, 3)).astype(np.float32)
        weights.append(numpy_helper.from_array(w, name=f"conv{i}.weight"))
        nodes.append(helper.make_node("Conv", [previous, f"conv{i}.weight"], [f"conv{i}"], pads=[1, 1, 1, 1],
                                      name=f"conv{i}/Conv"))
        nodes.append(helper.make_node("Relu", [f"conv{i}"], [f"relu{i}"], name=f"relu{i}"))
        previous, width = f"relu{i}", channels
    head = rng.normal(0, 0.05, (1, width, 1, 1)).astype(np.float32)
    weights.append(numpy_helper.from_array(head, name="head.weight"))
    nodes.append(helper.make_node("Conv", [previous, "head.weight"], ["logits"], name="head/Conv"))
    graph = helper.make_graph(nodes, "slow_convseg", [image], [logits], initializer=weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="convseg-deploy-tests")
    model.ir_version = 8
    set_metadata(model, {"preprocess": PreprocessSpec(size=(size, size)).to_dict(), "threshold": 0.5,
                         "precision": "fp32"})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path
