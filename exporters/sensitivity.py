"""Accuracy-bounded INT8: keep the most sensitive layers in float, one by one, until the target holds.

The anchors are OpenVINO's "quantize with accuracy control" and Polygraphy's ``debug precision``:
1. score the quantized model on the verification frames (mask agreement with FP32, and the Dice
   drop against the ground-truth masks when the frames have them);
2. if it misses its target, measure each INT8 convolution's sensitivity: the error of the logits
   (mean squared difference from FP32) when only that layer's Q/DQ are bypassed. Bypassing edits
   the quantized graph (no new calibration, no new Q/DQ placement), so every layer costs one run
   over the verification frames;
3. bypass the layers in order of sensitivity, one more each step, until the target holds; then
   the caller quantizes again with those layers excluded, so the final file has the quantizer's
   own placement, and checks that file.
A target that still misses after ``max_float`` layers fails, naming the best agreement reached.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import numpy as np


# At most this share of the INT8 convolutions is given back to float before giving up: beyond
# half, the file is no longer an INT8 model worth shipping.
MAX_FLOAT_SHARE = 0.5


def mean_upper_bound(values: np.ndarray, confidence: float) -> float:
    """One-sided upper confidence bound of the mean of ``values`` (Student's t): the mean plus
    t(confidence, n-1) standard errors; infinite below two values (no spread to judge by)."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) < 2:
        return float("inf")
    from scipy.stats import t

    spread = float(np.std(values, ddof=1)) / np.sqrt(len(values))
    return float(np.mean(values) + t.ppf(confidence, len(values) - 1) * spread)


@dataclass
class Score:
    """How close a quantized model's masks are to FP32's on the verification frames."""

    agreement: float  # mean per-frame Dice of its masks against the FP32 masks (the bench's measure)
    dice_drop: float | None  # FP32's mean Dice minus its mean Dice against ground truth; None without masks
    mse: float  # mean squared logit difference from FP32: the continuous error sensitivity ranks by
    dice_drop_bound: float | None = None  # upper confidence bound of dice_drop (exporters.defaults.DROP_CONFIDENCE)
    pooled_agreement: float | None = None  # Dice with FP32's masks over all pixels of all frames
    frames: int = 0

    def meets(self, min_agreement: float, max_dice_drop: float | None) -> bool:
        """Agreement at least ``min_agreement``; with ``max_dice_drop``, the drop's upper bound
        (its point value when no bound was computed) at most that."""
        drop = self.dice_drop if self.dice_drop_bound is None else self.dice_drop_bound
        drop_ok = max_dice_drop is None or (drop is not None and drop <= max_dice_drop)
        return self.agreement >= min_agreement and drop_ok

    def describe(self) -> str:
        drop = "" if self.dice_drop is None else f", Dice drop {self.dice_drop:+.4f}"
        if self.dice_drop is not None and self.dice_drop_bound is not None:
            from convseg_deploy.exporters.defaults import DROP_CONFIDENCE

            drop += f" (upper {DROP_CONFIDENCE:.0%} bound {self.dice_drop_bound:+.4f} over {self.frames} frames)"
        return f"agreement {self.agreement:.4f}{drop}"


@dataclass
class Search:
    """The outcome of ``keep_sensitive_float``: the layers to keep float and what each step scored."""

    float_layers: list[str]
    score: Score  # the best score reached (of a copy with ``float_layers`` bypassed)
    met: bool
    sensitivity: list[tuple[str, float]] = field(default_factory=list)
    steps: list[dict[str, Any]] = field(default_factory=list)


def conv_precisions(model: Any) -> tuple[list[str], list[str]]:
    """(names of INT8 convolutions, names of all convolutions): a Conv is INT8 when its weight is
    produced by a DequantizeLinear."""
    producers = {o: n for n in model.graph.node for o in n.output}
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    int8 = [n.name for n in convs if n.input[1] in producers and producers[n.input[1]].op_type == "DequantizeLinear"]
    return int8, [n.name for n in convs]


def _dequantized(dq: Any, producers: dict[str, Any], inits: dict[str, Any]) -> tuple[str, Any | None]:
    """The float tensor a DequantizeLinear restores: the input of its QuantizeLinear when there is
    one, else (a pre-quantized initializer) a new float initializer computed like DequantizeLinear."""
    from onnx import numpy_helper

    source = dq.input[0]
    if source in producers and producers[source].op_type == "QuantizeLinear":
        return producers[source].input[0], None
    q = numpy_helper.to_array(inits[source]).astype(np.float64)
    scale = numpy_helper.to_array(inits[dq.input[1]]).astype(np.float64)
    zero = numpy_helper.to_array(inits[dq.input[2]]).astype(np.float64) if len(dq.input) > 2 and dq.input[2] else 0.0
    axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
    if np.ndim(scale) == 1 and q.ndim > 1:
        shape = [1] * q.ndim
        shape[axis] = -1
        scale, zero = scale.reshape(shape), np.reshape(zero, shape) if np.ndim(zero) else zero
    name = f"{source}_float"
    return name, numpy_helper.from_array(((q - zero) * scale).astype(np.float32), name)


def bypass(model: Any, layers: Iterable[str]) -> Any:
    """A copy of ``model`` where the named layers read float tensors instead of their Q/DQ outputs."""
    import onnx

    edited = onnx.ModelProto()
    edited.CopyFrom(model)
    graph = edited.graph
    producers = {o: n for n in graph.node for o in n.output}
    inits = {t.name: t for t in graph.initializer}
    wanted = set(layers)
    for node in graph.node:
        if node.name not in wanted:
            continue
        for i, tensor in enumerate(node.input):
            dq = producers.get(tensor)
            if dq is None or dq.op_type != "DequantizeLinear":
                continue
            name, init = _dequantized(dq, producers, inits)
            if init is not None and name not in inits:
                graph.initializer.append(init)
                inits[name] = init
            node.input[i] = name
    return edited


def keep_sensitive_float(model: Any, first: Score, score: Callable[[Any], Score], min_agreement: float,
                         max_dice_drop: float | None, log: Callable[[str], None] = print) -> Search:
    """Search the layers of ``model`` (a quantized onnx.ModelProto, whose own score is ``first``)
    to keep float; ``score`` runs a model over the verification frames."""
    if first.meets(min_agreement, max_dice_drop):
        return Search([], first, True)
    int8, _ = conv_precisions(model)
    log(f"    {first.describe()} misses the target: measuring the sensitivity of {len(int8)} INT8 convolutions")
    sensitivity = sorted(((name, score(bypass(model, [name])).mse) for name in int8), key=lambda item: item[1])
    best, chosen, steps = first, [], []
    for name, _ in sensitivity[: max(1, int(len(int8) * MAX_FLOAT_SHARE))]:
        chosen.append(name)
        result = score(bypass(model, chosen))
        steps.append({"float_layers": len(chosen), "layer": name, "agreement": result.agreement,
                      "dice_drop": result.dice_drop})
        log(f"    + {name} in float: {result.describe()}")
        if result.agreement > best.agreement:
            best = result
        if result.meets(min_agreement, max_dice_drop):
            return Search(chosen, result, True, sensitivity, steps)
    return Search(chosen, best, False, sensitivity, steps)


def failure_reason(search: Search, min_agreement: float, max_dice_drop: float | None) -> str:
    """Why the search gave up, naming the best score it reached."""
    target = f"agreement >= {min_agreement}" + ("" if max_dice_drop is None else f" and a Dice drop bound <= {max_dice_drop}")
    return (f"even with {len(search.float_layers)} layers kept in float the best was {search.score.describe()}, "
            f"short of {target}: calibrate on more representative frames (--calib-data) or lower the target")
