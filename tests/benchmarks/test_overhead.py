"""The harness-overhead check: its measurement on a real ONNX file, and its verdict and exit code."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from convseg_deploy.benchmarks import overhead
from convseg_deploy.benchmarks.overhead import Overhead, measure_overhead
from convseg_deploy.errors import ConvSegError
from tests.fakes.onnx_models import tiny_onnx


def test_measures_both_loops_on_the_same_model(tmp_path: Path) -> None:
    result = measure_overhead(tiny_onnx(tmp_path / "m.onnx", precision="fp32"), batch_size=2, iters=3, rounds=2,
                              warmup=1, threads=1)
    assert result.bare_fps > 0 and result.harness_fps > 0 and result.ratio > 0
    assert (result.rounds, result.iters) == (2, 3)


def test_needs_two_rounds(tmp_path: Path) -> None:
    with pytest.raises(ConvSegError, match="2 rounds"):
        measure_overhead(tiny_onnx(tmp_path / "m.onnx"), rounds=1)


@pytest.mark.parametrize("ratio,code", [(0.99, 0), (1.2, 0), (0.94, 1)])
def test_exit_code_says_whether_the_harness_is_within_five_percent(
        ratio: float, code: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(overhead, "measure_overhead", lambda *a, **k: Overhead(100.0, 100.0 * ratio, ratio, 6, 20))
    res = CliRunner().invoke(overhead.main, [str(tmp_path / "m.onnx")])
    assert res.exit_code == code
    assert "bare onnxruntime loop: 100.00 FPS" in res.output and f"ratio harness/bare:    {ratio:.3f}" in res.output
    assert ("FAIL" in res.output) == bool(code)


def test_missing_model_is_a_one_line_error(tmp_path: Path) -> None:
    res = CliRunner().invoke(overhead.main, [str(tmp_path / "missing.onnx")])
    assert res.exit_code == 1 and res.output.startswith("Error: ") and "Traceback" not in res.output
