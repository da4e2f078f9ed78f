"""The CPU probe on the five CPU kinds of these machines, the ISA cap, and ARM boards."""

from __future__ import annotations

import platform
from pathlib import Path

import pytest

from convseg_deploy.errors import ConvSegError
from convseg_deploy.hardware import cpu

# kind: (family, model number, microarch, avx2, avx512, avx512_vnni, avx_vnni, avx512_bf16, amx)
EXPECTED = {
    "intel-xeon-amx": (6, 143, "Sapphire Rapids", True, True, True, True, True, True),
    "intel-xeon-avx512-vnni": (6, 85, "Cascade Lake", True, True, True, False, False, False),
    "amd-epyc-zen2": (23, 49, "Zen 2", True, False, False, False, False, False),
    "amd-epyc-zen4": (25, 17, "Zen 4", True, True, True, False, True, False),
    "amd-epyc-zen5": (26, 2, "Zen 5", True, True, True, True, True, False),
}
ISA_KEYS = ("avx2", "avx512", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx")


def test_each_kind_is_named_with_its_instruction_sets(cpu_kind: tuple[str, Path],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(cpu.ISA_LIMIT_ENV, raising=False)
    kind, path = cpu_kind
    family, number, arch, *isa = EXPECTED[kind]
    info = cpu.cpu_info(path)
    assert (info["family"], info["model_number"], info["microarch"]) == (family, number, arch)
    assert [info[k] for k in ISA_KEYS] == isa and info["cores"] == 2 and info["flags_known"]
    assert info["vnni"] is (isa[2] or isa[3]) and info["bf16"] is (isa[4] or isa[5])
    assert info["intel"] is kind.startswith("intel") and info["isa_limit"] is None
    line = cpu.describe(info)
    assert line.startswith(f"{info['model']} (") and f"family {family} model {number}, {arch}" in line
    for (key, name) in cpu.ISA_NAMES:  # every set is named, as present or as missing
        assert (name in line.split("; no ")[0]) is info[key] or (not info[key] and name in line.split("; no ")[1])


@pytest.mark.parametrize(("level", "left"), [("AVX2", ("avx2",)), ("avx512_core", ("avx2", "avx512")),
                                             ("AVX512_CORE_VNNI", ("avx2", "avx512", "avx512_vnni", "avx_vnni")),
                                             ("AVX512_CORE_BF16", ISA_KEYS[:-1])])
def test_the_isa_cap_makes_an_amx_xeon_look_like_a_weaker_cpu(level: str, left: tuple[str, ...],
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(cpu.ISA_LIMIT_ENV, level)
    info = cpu.cpu_info(cpu.Path(__file__).parent / "cpuinfo" / "intel-xeon-amx.txt")
    assert [k for k in ISA_KEYS if info[k]] == list(left) and info["isa_limit"] == level.upper()
    assert f"capped at {level.upper()}" in cpu.describe(info)
    if level == "AVX2":  # exactly what the AVX2-only EPYC reports
        zen2 = cpu.cpu_info(cpu.Path(__file__).parent / "cpuinfo" / "amd-epyc-zen2.txt")
        assert {k: info[k] for k in (*ISA_KEYS, "vnni", "bf16")} == {k: zen2[k] for k in (*ISA_KEYS, "vnni", "bf16")}


def test_an_unknown_isa_cap_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(cpu.ISA_LIMIT_ENV, "avx3")
    with pytest.raises(ConvSegError, match="CONVSEG_MAX_CPU_ISA='avx3' is not a level.*AVX2, AVX512_CORE"):
        cpu.cpu_info(cpu.Path(__file__).parent / "cpuinfo" / "amd-epyc-zen2.txt")


@pytest.mark.parametrize(("vendor", "family", "model", "stepping", "arch"), [
    ("AuthenticAMD", 23, 1, None, "Zen / Zen+"), ("AuthenticAMD", 25, 1, None, "Zen 3"),
    ("AuthenticAMD", 25, 0x61, None, "Zen 4"), ("GenuineIntel", 6, 85, 4, "Skylake-SP"),
    ("GenuineIntel", 6, 85, 11, "Cooper Lake"), ("GenuineIntel", 6, 106, None, "Ice Lake-SP"),
    ("GenuineIntel", 6, 1, None, None), ("CentaurHauls", 7, 1, None, None), ("AuthenticAMD", None, None, None, None)])
def test_microarch_table(vendor: str, family: int | None, model: int | None, stepping: int | None,
                         arch: str | None) -> None:
    assert cpu.microarch(vendor, family, model, stepping) == arch


def test_unreadable_cpuinfo_leaves_the_flags_unknown(tmp_path: Path) -> None:
    info = cpu.cpu_info(tmp_path / "absent", tmp_path / "absent")
    assert info["flags_known"] is False and info["flags"] == [] and info["microarch"] is None
    assert cpu.describe(info).endswith("instruction sets unknown")


def test_a_jetson_is_named_by_its_board(tmp_path: Path) -> None:
    """ARM's /proc/cpuinfo has no "model name": the device tree names the board (reports and bundles)."""
    cpuinfo, board = tmp_path / "cpuinfo", tmp_path / "model"
    cpuinfo.write_text("processor\t: 0\nBogoMIPS\t: 62.50\nFeatures\t: fp asimd asimddp\nCPU part\t: 0xd42\n")
    board.write_text("NVIDIA Jetson Orin Nano Developer Kit\x00")
    info = cpu.cpu_info(cpuinfo, board)
    assert info["model"] == f"NVIDIA Jetson Orin Nano Developer Kit ({platform.machine()})" and "asimddp" in info["flags"]
    assert not info["avx2"] and info["microarch"] is None
    assert cpu.cpu_info(cpuinfo, tmp_path / "absent")["model"] == (platform.processor() or platform.machine())


def test_this_cpu_is_the_probe_of_proc_cpuinfo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(cpu.ISA_LIMIT_ENV, raising=False)
    if not Path("/proc/cpuinfo").is_file():
        pytest.skip("not Linux: no /proc/cpuinfo")
    want = cpu.cpu_info()
    cpu.this_cpu.cache_clear()
    try:
        assert cpu.this_cpu() == want
    finally:
        cpu.this_cpu.cache_clear()
