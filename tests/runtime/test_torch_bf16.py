"""PyTorch's bf16 row: autocast + channels_last on CPUs with BF16, refused as missing hardware elsewhere."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from convseg_deploy.hardware import cpu
from convseg_deploy.errors import ConvSegError, MissingDependencyError
from convseg_deploy.metrics import mean_dice
from convseg_deploy.runtime.torch_runner import TorchRunner

pytestmark = pytest.mark.cpu_dependent  # bf16 autocast runs native or emulated, by the CPU


def test_bf16_needs_bf16_hardware(trained_checkpoint: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cpu, "this_cpu", lambda: {"bf16": False})
    with pytest.raises(MissingDependencyError, match="no BF16 instructions"):
        TorchRunner(trained_checkpoint, precision="bf16").activate()
    with pytest.raises(ConvSegError, match="fp32, fp16 .* or bf16"):
        TorchRunner(trained_checkpoint, precision="int8")


def test_bf16_autocast_agrees_with_fp32(trained_checkpoint: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Claim BF16 so that the row runs here (PyTorch then emulates bf16 where the CPU lacks it):
    # the numbers are bf16's either way, and the masks must agree with fp32.
    monkeypatch.setattr(cpu, "this_cpu", lambda: {"bf16": True})
    batch = np.random.default_rng(0).normal(size=(4, 3, 64, 64)).astype(np.float32)
    with TorchRunner(trained_checkpoint, precision="fp32", threads=2) as ref:
        want = ref.infer(batch)
    with TorchRunner(trained_checkpoint, precision="bf16", threads=2) as runner:
        got = runner.infer(batch)
        assert runner.info.precision == "bf16" and got.dtype == np.float32 and got.shape == want.shape
    diff = np.abs(got - want).max() / np.abs(want).max()
    assert 0 < diff < 0.1  # really computed in bf16 (not fp32), and close to fp32
    assert mean_dice(got > 0, want > 0) >= 0.9
