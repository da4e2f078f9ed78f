"""Where a model's time goes: ONNX Runtime's per-node profile joined with the per-node MAC count.

    python -m benchmarks.layer_profile model.int8-cpu.onnx [--threads 2] [--iters 3] [--peak 150]

Each node's kernel time comes from ONNX Runtime's own profiler (``enable_profiling``); fused nodes
keep the name of the node they were fused from plus ``_token_N`` (a Q/DQ group becomes a
QLinearConv named after its Conv) and blocked-layout (NCHWc) convolutions take their output
tensor's name plus ``_nchwc``, so each is joined to the MACs of its original node
(``convseg_deploy.artifacts.macs``). A Conv fused with the Relu or residual Add after it takes
the name of the last fused op's output: the join walks back from that op through element-wise
ops to the Conv whose work it carries. Nodes are summed into layer groups (the first two parts of
the exporter's name: ``/decoder.0/branches.1``, ``/encoder/layer3``); the layout transposes and
memory-bound ops that ONNX Runtime inserts or keeps land in their own groups. For each group:
milliseconds per frame, GMAC, GMAC/s and, given a peak, the milliseconds lost against it
(time minus work / peak), which is what says which groups keep a row from the machine's limit.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

_SUFFIX = re.compile(r"(_token_\d+)?_kernel_time$")
_NCHWC = "_nchwc"  # ONNX Runtime's blocked-layout Conv is named after its output tensor plus this
# ops ONNX Runtime fuses into the Conv before them (activations, the residual Add, a folded BN)
_FUSED_AFTER_CONV = {"Relu", "Add", "Clip", "Sigmoid", "HardSigmoid", "LeakyRelu", "Mul", "BatchNormalization", "Identity"}
_FUSION_DEPTH = 3


def _working_node(name: str, nodes: dict[str, Any], producer: dict[str, Any], work: dict[str, int]) -> str:
    """``name``, or the node with MACs that ONNX Runtime fused into it: found by walking back
    from an element-wise op through its inputs' producers (at most a few steps)."""
    frontier = [nodes[name]] if name in nodes else []
    for _ in range(_FUSION_DEPTH):
        found = next((n.name for n in frontier if work.get(n.name)), None)
        if found:
            return found
        frontier = [producer[i] for n in frontier if n.op_type in _FUSED_AFTER_CONV for i in n.input if i in producer]
    return name


def group_of(node: str) -> str:
    """``/decoder.0/branches.1/0/Conv`` -> ``/decoder.0/branches.1``; unnamed nodes by their name."""
    parts = [p for p in node.split("/") if p]
    return "/" + "/".join(parts[:2]) if node.startswith("/") and len(parts) > 2 else node


def profile(onnx_path: Path, threads: int, iters: int = 3, peak: float | None = None) -> dict[str, Any]:
    """Per-group time and work of one frame of ``onnx_path`` in a CPU session (median over ``iters``)."""
    import onnxruntime as ort

    from convseg_deploy.artifacts.macs import count_macs
    from convseg_deploy.ort_session import session_options

    import onnx

    macs = count_macs(onnx_path)
    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    nodes = {n.name: n for n in graph.node if n.name}
    producer = {out: n for n in graph.node for out in n.output}  # tensor -> the node that writes it
    with tempfile.TemporaryDirectory() as tmp:
        opts = session_options(threads)
        opts.enable_profiling = True
        opts.profile_file_prefix = str(Path(tmp) / "ort")
        session = ort.InferenceSession(str(onnx_path), sess_options=opts, providers=["CPUExecutionProvider"])
        shape = [d if isinstance(d, int) else 1 for d in session.get_inputs()[0].shape]
        x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        session.run(None, {session.get_inputs()[0].name: x})  # warm-up: its events are dropped below
        for _ in range(iters):
            session.run(None, {session.get_inputs()[0].name: x})
        events = json.loads(Path(session.end_profiling()).read_text())
    runs = [e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"]
    timed_from = runs[1]["ts"] if len(runs) > 1 else 0  # skip the warm-up run
    per_node: dict[str, float] = {}
    for event in events:
        if event.get("cat") == "Node" and event["ts"] >= timed_from and event["name"].endswith("_kernel_time"):
            node = _SUFFIX.sub("", event["name"])
            written = producer.get(node[: -len(_NCHWC)]) if node.endswith(_NCHWC) else None
            if written is not None and written.name:
                node = _working_node(written.name, nodes, producer, macs.by_node)
            per_node[node] = per_node.get(node, 0.0) + event["dur"] / 1e3 / iters  # ms per frame
    groups: dict[str, dict[str, float]] = {}
    for node, ms in per_node.items():
        group = groups.setdefault(group_of(node), {"ms": 0.0, "gmac": 0.0})
        group["ms"] += ms
        group["gmac"] += macs.by_node.get(node, 0) / 1e9
    total_ms = sum(g["ms"] for g in groups.values())
    rows = []
    for name, g in groups.items():
        row = {"group": name, "ms": round(g["ms"], 2), "share": round(g["ms"] / total_ms, 3) if total_ms else None,
               "gmac": round(g["gmac"], 3), "gmac_per_s": round(g["gmac"] / g["ms"] * 1e3, 1) if g["ms"] else None}
        if peak:
            row["ms_lost"] = round(g["ms"] - g["gmac"] / peak * 1e3, 2)
        rows.append(row)
    rows.sort(key=lambda r: r.get("ms_lost", r["ms"]), reverse=True)
    counted = sum(macs.by_node.get(n, 0) for n in per_node) / 1e9
    return {"file": str(onnx_path), "threads": threads, "iters": iters, "total_ms": round(total_ms, 1),
            "gmac": round(macs.gmac, 3), "gmac_joined": round(counted, 3), "peak_gmac_per_s": peak, "groups": rows}


def format_profile(result: dict[str, Any], top: int = 8) -> list[str]:
    lost = result["peak_gmac_per_s"] is not None
    lines = [f"{Path(result['file']).name}: {result['total_ms']} ms of kernels per frame, {result['gmac']} GMAC"
             + (f"; against a peak of {result['peak_gmac_per_s']} GMAC/s" if lost else "")]
    for g in result["groups"][:top]:
        rate = "-" if g["gmac_per_s"] is None else f"{g['gmac_per_s']:.0f} GMAC/s"
        extra = f", {g['ms_lost']:.1f} ms lost" if lost else ""
        lines.append(f"  {g['group']:<32} {g['ms']:8.1f} ms ({g['share']:.0%}) {g['gmac']:7.2f} GMAC {rate}{extra}")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("onnx", type=Path)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--peak", type=float, help="GMAC/s to measure the groups' loss against")
    parser.add_argument("--json", type=Path, help="also write the profile here")
    args = parser.parse_args()
    result = profile(args.onnx, args.threads, args.iters, args.peak)
    print("\n".join(format_profile(result)))
    if args.json:
        from convseg_deploy.fsutil import write_json

        write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
