"""The theoretical arithmetic limit of this CPU: cores x clock x MACs per cycle and core, per
precision, from its instruction sets. Always marked ``theoretical``: a VM's reported clock is
nominal, and the real rate is what ``hardware.peak`` measures.

MACs per cycle and core: FP32 2 FMA units x 16 lanes with native AVX-512 (AVX-512 Xeons, Zen 5),
2 x 8 with AVX2 and on Zen 4 (its 512-bit ops are double-pumped on 256-bit units); INT8 4x FP32
with VNNI, about 2x without (16-bit multiply-adds), 1024 with AMX tiles; BF16 2x FP32 with
AVX512-BF16, 512 with AMX; FP16 2x FP32 with AVX512-FP16.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from convseg_deploy.hardware.cpu import available_cpus, cpu_info, read_cpuinfo


def cpu_details(cpuinfo: Path = Path("/proc/cpuinfo")) -> dict[str, Any]:
    """``cpu_info()`` plus what the theoretical figure needs: every flag (capped like the probe's
    by ``CONVSEG_MAX_CPU_ISA``) and the clock."""
    info = cpu_info(cpuinfo)
    fields, flags, _ = read_cpuinfo(cpuinfo)
    try:
        mhz: float | None = float(fields.get("cpu MHz", ""))
    except ValueError:
        mhz = None
    clock, source = None, None
    try:  # the nominal maximum where cpufreq exposes it; VMs usually do not
        clock = int(Path("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq").read_text()) / 1e6
        source = "cpufreq cpuinfo_max_freq"
    except (OSError, ValueError):
        if mhz:
            clock, source = mhz / 1e3, "/proc/cpuinfo cpu MHz (as reported; a VM's clock is not a fact)"
    return {**info, "cpus": available_cpus(), "all_flags": flags, "clock_ghz": clock, "clock_source": source}


def _fp32_per_cycle(cpu: dict[str, Any]) -> tuple[int, str]:
    flags = cpu["all_flags"]
    zen4 = cpu["vendor"] == "AuthenticAMD" and cpu["family"] == 25
    if "avx512f" in flags and not zen4:
        # Zen 5 (family 26) and AVX-512 Xeons: two 512-bit FMA units (some Xeon Silver/Bronze have one)
        return 32, "AVX-512: 2 FMA units x 16 FP32 lanes"
    if "avx512f" in flags:
        return 16, "AVX-512 on Zen 4: 512-bit ops double-pumped on 256-bit units, 2 FMA x 8 lanes"
    if "avx2" in flags and "fma" in flags:
        return 16, "AVX2: 2 FMA units x 8 FP32 lanes"
    if "asimd" in flags:
        return 8, "NEON: 2 FMA units x 4 FP32 lanes"
    return 8, "SSE: no FMA, 2 x 4 lanes"


def theoretical(cpu: dict[str, Any], threads: int) -> dict[str, Any]:
    """GMAC/s per precision from instruction sets, cores used and the reported clock."""
    # one thread per core (bench's default); hyper-threads of one core share its vector units
    cores = max(1, min(threads, cpu.get("cpus") or threads))
    fp32, basis = _fp32_per_cycle(cpu)
    flags = cpu["all_flags"]
    per_cycle: dict[str, tuple[int, str]] = {"fp32": (fp32, basis)}
    if "amx_int8" in flags:
        per_cycle["int8"] = (1024, "AMX INT8 tiles: 1024 MACs per cycle")
    elif "avx512_vnni" in flags or "avx_vnni" in flags:
        per_cycle["int8"] = (4 * fp32, "VNNI: 4 INT8 MACs per FP32 lane per cycle")
    elif "avx2" in flags or "asimddp" in flags:
        per_cycle["int8"] = (2 * fp32, "no VNNI: INT8 through 16-bit multiply-adds, about 2x FP32")
    if "amx_bf16" in flags:
        per_cycle["bf16"] = (512, "AMX BF16 tiles: 512 MACs per cycle")
    elif "avx512_bf16" in flags:
        per_cycle["bf16"] = (2 * fp32, "AVX512-BF16: 2 BF16 MACs per FP32 lane per cycle")
    if "avx512_fp16" in flags:
        per_cycle["fp16"] = (2 * fp32, "AVX512-FP16: 32 FP16 lanes")
    clock = cpu.get("clock_ghz")
    return {precision: {"gmac_per_s": round(cores * clock * n, 1) if clock else None, "macs_per_cycle_per_core": n,
                        "basis": f"{cores} cores x {f'{clock:.2f}' if clock else '?'} GHz x {n} ({why})", "theoretical": True}
            for precision, (n, why) in per_cycle.items()}
