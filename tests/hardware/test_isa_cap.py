"""What ``make test``'s weakest-ISA pass really changes (ONEDNN_MAX_CPU_ISA=AVX2,
ATEN_CPU_CAPABILITY=avx2, CONVSEG_MAX_CPU_ISA=AVX2; see docs/cpus.md): each library that takes
a cap is checked to run under it, so a library that stops honouring it is noticed. ONNX Runtime
has no such switch (its MLAS kernels follow CPUID), so it is not capped and not checked here."""

from __future__ import annotations

import os

import numpy as np
import pytest

pytestmark = pytest.mark.cpu_dependent


def _cap(name: str) -> str:
    value = os.environ.get(name, "")
    if not value:
        pytest.skip(f"not the weakest-ISA pass: {name} is unset")
    return value


def test_the_probe_reports_the_capped_cpu() -> None:
    from convseg_deploy.hardware.cpu import ISA_NAMES, cpu_info

    level = _cap("CONVSEG_MAX_CPU_ISA").upper()
    info = cpu_info()
    assert info["isa_limit"] == level
    if level == "AVX2":  # what an AVX2-only EPYC (Zen 2) reports
        assert [key for key, _ in ISA_NAMES if info[key]] == ["avx2"] and not (info["vnni"] or info["bf16"])


def test_pytorch_runs_at_the_capped_level() -> None:
    import torch

    level = _cap("ATEN_CPU_CAPABILITY").upper()
    assert torch.backends.cpu.get_cpu_capability() == level


def test_openvinos_cpu_plugin_compiles_for_the_capped_level() -> None:
    ov = pytest.importorskip("openvino", reason="OpenVINO is not installed: pip install 'convseg-deploy[openvino]'")
    import openvino.opset13 as ops

    level = _cap("ONEDNN_MAX_CPU_ISA").lower()
    image = ops.parameter([1, 16, 16, 16], np.float32)
    weights = ops.constant(np.random.default_rng(0).normal(size=(16, 16, 3, 3)).astype(np.float32))
    model = ov.Model([ops.relu(ops.convolution(image, weights, [1, 1], [1, 1], [1, 1], [1, 1]))], [image])
    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    info = [op.get_rt_info() for op in compiled.get_runtime_model().get_ordered_ops()]
    kernels = {i["primitiveType"].astype(str) for i in info if i["layerType"].astype(str) == "Convolution"}
    # the kernel's name carries its ISA: brgconv_avx2_f32 under AVX2, brgconv_avx512_f32 without the cap
    assert kernels and all(level.split("_")[0] in k for k in kernels), kernels
