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
