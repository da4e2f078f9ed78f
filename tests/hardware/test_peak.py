"""The peak probe: theoretical figures from instruction sets (marked as such), a positive measured
rate per precision through the installed libraries, and its cache."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from convseg_deploy.hardware import limits, peak

SMALL = {"channels": 16, "kernel": 3, "size": 16}  # 0.6 MMAC: the tests measure that it works, not how fast

ZEN2 = "fma avx avx2"
ZEN4_5 = "fma avx avx2 avx512f avx512bw avx512vl avx512_vnni avx_vnni avx512_bf16"
XEON_AMX = ZEN4_5 + " amx_int8 amx_bf16 avx512_fp16"


def _cpuinfo(tmp_path: Path, vendor: str, family: int, flags: str, mhz: float = 2500.0) -> Path:
    path = tmp_path / f"cpuinfo-{family}"
    path.write_text(f"vendor_id\t: {vendor}\ncpu family\t: {family}\nmodel\t\t: 1\nmodel name\t: Test CPU\n"
                    f"cpu MHz\t\t: {mhz}\nflags\t\t: {flags}\n")
    return path


def _theory(tmp_path: Path, vendor: str, family: int, flags: str, threads: int = 2) -> dict:
    cpu = limits.cpu_details(_cpuinfo(tmp_path, vendor, family, flags))
    cpu["clock_ghz"] = 2.5  # the sandbox may have cpufreq: pin the clock the figures are computed from
    return limits.theoretical({**cpu, "cpus": 8}, threads)


def test_theoretical_from_instruction_sets(tmp_path: Path) -> None:
    zen2 = _theory(tmp_path, "AuthenticAMD", 23, ZEN2)
    assert zen2["fp32"]["gmac_per_s"] == 2 * 2.5 * 16 and zen2["int8"]["gmac_per_s"] == 2 * 2.5 * 32  # no VNNI: 2x
    assert "bf16" not in zen2
    zen4 = _theory(tmp_path, "AuthenticAMD", 25, ZEN4_5)
    assert zen4["fp32"]["macs_per_cycle_per_core"] == 16  # double-pumped AVX-512
    assert zen4["int8"]["macs_per_cycle_per_core"] == 64 and zen4["bf16"]["macs_per_cycle_per_core"] == 32
    zen5 = _theory(tmp_path, "AuthenticAMD", 26, ZEN4_5)
    assert zen5["fp32"]["gmac_per_s"] == 160.0 and zen5["int8"]["gmac_per_s"] == 640.0  # native 512-bit, VNNI 4x
    amx = _theory(tmp_path, "GenuineIntel", 6, XEON_AMX, threads=4)
    assert amx["int8"]["gmac_per_s"] == 4 * 2.5 * 1024 and amx["fp16"]["macs_per_cycle_per_core"] == 64
    assert all(v["theoretical"] for v in (*zen2.values(), *zen5.values(), *amx.values()))
    assert "2.50 GHz" in zen5["fp32"]["basis"]


def test_threads_beyond_the_cpus_do_not_add_units(tmp_path: Path) -> None:
    cpu = {**limits.cpu_details(_cpuinfo(tmp_path, "AuthenticAMD", 23, ZEN2)), "cpus": 2, "clock_ghz": 2.0}
    assert limits.theoretical(cpu, 8)["fp32"]["gmac_per_s"] == limits.theoretical(cpu, 2)["fp32"]["gmac_per_s"] == 64.0


def test_row_precisions_map_to_probe_precisions() -> None:
    assert [peak.precision_class(p) for p in ("fp32", "int8", "int8-cpu", "int8+bf16", "bf16", "fp16", "x")] == \
        ["fp32", "int8", "int8", "int8", "bf16", "fp16", None]


def test_probe_measures_every_precision_and_caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(peak.CACHE_ENV, str(tmp_path / "cache"))
    first = peak.machine_peak(1, seconds=0.01, kernel=SMALL)
    assert not first["cached"] and first["kernel"]["gmac"] == pytest.approx(16 * 16 * 16 * 16 * 9 / 1e9, abs=1e-3)
    measured = first["measured"]
    assert not measured["errors"], measured["errors"]  # onnxruntime, openvino and torch are installed here
    for library in ("onnxruntime", "openvino", "torch"):
        assert measured["libraries"][library]["fp32"] > 0
    for precision in ("fp32", "int8"):
        best = measured["peaks"][precision]
        assert best["gmac_per_s"] == max(r[precision] for r in measured["libraries"].values() if precision in r) > 0
    assert peak.summary(first)["measured"]["int8"] == measured["peaks"]["int8"]["gmac_per_s"]
    assert all(v["theoretical"] for v in first["theoretical"].values())
    files = list((tmp_path / "cache").glob("*-t1-*.json"))
    assert len(files) == 1 and json.loads(files[0].read_text())["key"]["threads"] == 1
    again = peak.machine_peak(1, seconds=0.01, kernel=SMALL)
    assert again["cached"] and again["measured"] == measured
    assert not peak.machine_peak(1, seconds=0.01, kernel=SMALL, reprobe=True)["cached"]
    lines = peak.format_peak(peak.summary(first))
    assert lines[0].startswith("fp32: ") and "theoretical" in lines[0]


def test_a_broken_library_is_reported_and_the_others_still_measure(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_args: object) -> dict:
        raise RuntimeError("no such library here")

    monkeypatch.setitem(peak.CPU_LIBRARIES, "openvino", broken)
    measured = peak.measure(1, 0.01, SMALL)
    assert measured["errors"]["openvino"] == "no such library here"
    assert "openvino" not in measured["libraries"] and measured["peaks"]["fp32"]["gmac_per_s"] > 0
