"""doctor: JSON for machines, one screen for people, providers that really load, VNNI from cpuinfo."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from convseg_deploy import doctor
from convseg_deploy.cli import main
from tests.fakes import install, make_fake_tensorrt


@pytest.mark.cpu_dependent
def test_json_parses_and_the_cpu_provider_loads() -> None:
    result = CliRunner().invoke(main, ["doctor", "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)  # nothing else on stdout, even when a GPU provider fails noisily
    providers = {p["name"]: p for p in info["onnxruntime"]["providers"]}
    assert providers["CPUExecutionProvider"]["loads"] is True
    assert info["python"]["version"] and info["cpu"]["cores"] >= 1
    assert {"model", "family", "model_number", "microarch", "avx2", "avx512", "vnni", "bf16", "amx"} <= set(info["cpu"])
    assert any(line.startswith("ONNX Runtime CPU") for line in info["can_run"])
    assert set(info) >= {"torch", "gpus", "tensorrt", "pycuda"}
    peak = info["peak"]  # the probe's figures: measured per precision, and the theoretical ones marked
    assert peak["measured"]["fp32"] > 0 and peak["measured"]["int8"] > 0
    assert peak["theoretical"]["fp32"] > 0 and "theoretical" in peak["theoretical_note"]


@pytest.mark.cpu_dependent
def test_text_is_one_screen() -> None:
    result = CliRunner().invoke(main, ["doctor"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) <= 30
    assert any(line.strip().startswith("fp32: ") and "measured" in line and "theoretical" in line for line in lines)
    assert any(line.startswith("ONNX Runtime") for line in lines)
    cpu = next(line for line in lines if line.startswith("CPU  "))
    from convseg_deploy.hardware.cpu import ISA_NAMES, describe, this_cpu

    assert cpu.split(None, 1)[1] == describe(this_cpu()) and all(name in cpu for _, name in ISA_NAMES)
    assert any("CPUExecutionProvider" in line and "loads" in line for line in lines)


@pytest.mark.parametrize(("flags", "vnni"), [("fpu avx2 avx512f avx512_vnni", True), ("fpu avx2 avx_vnni", True),
                                             ("fpu sse4_2 avx2", False)])
def test_vnni_from_cpuinfo(tmp_path: Path, flags: str, vnni: bool) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nmodel name\t: Test CPU 9000\nflags\t\t: {flags}\n\nprocessor\t: 1\n")
    info = doctor.cpu_info(cpuinfo)
    assert info["model"] == "Test CPU 9000" and info["vnni"] is vnni and "avx2" in info["flags"]


def test_tensorrt_and_pycuda_versions(monkeypatch: pytest.MonkeyPatch) -> None:
    install(monkeypatch, make_fake_tensorrt("10.13.0"))
    assert doctor._module_version("tensorrt") == {"installed": True, "version": "10.13.0"}
    assert doctor._module_version("pycuda")["installed"] is True
    install(monkeypatch, None)
    assert doctor._module_version("tensorrt")["installed"] is False
