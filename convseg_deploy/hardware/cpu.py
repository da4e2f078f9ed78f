"""The one CPU probe: model, vendor, family/model numbers, microarchitecture, cores and the
instruction sets that decide how fast each precision runs.

The development and CI machines are not one CPU (an Intel Xeon with AMX, one with AVX-512 VNNI
only, AMD EPYCs from Zen 2 with AVX2 only to Zen 5), and FP32, INT8 and BF16 speed, which bench
rows run at all (BF16 without hardware support is emulated and slow) and whether ``predict``
prefers OpenVINO all follow from these flags. So every report names them, from here.

``CONVSEG_MAX_CPU_ISA`` caps what the probe reports, with oneDNN's names for the levels
(``AVX2``, ``AVX512_CORE``, ``AVX512_CORE_VNNI``, ``AVX512_CORE_BF16``): set next to
``ONEDNN_MAX_CPU_ISA``, the code that reads capabilities sees the weaker CPU that the kernels
are limited to, so a Xeon catches what an AVX2-only EPYC would hit (``make test``'s second pass).
"""

from __future__ import annotations

import functools
import os
import platform
from pathlib import Path
from typing import Any

ISA_LIMIT_ENV = "CONVSEG_MAX_CPU_ISA"
VNNI_FLAGS = ("avx512_vnni", "avx_vnni")
BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # the CPUs where BF16 inference is faster than FP32
AMX_FLAGS = ("amx_tile", "amx_bf16", "amx_int8")
_AVX512 = ("avx512f", "avx512dq", "avx512cd", "avx512bw", "avx512vl", "avx512ifma", "avx512vbmi", "avx512_vbmi2",
           "avx512_bitalg", "avx512_vpopcntdq", "avx512_vp2intersect", "avx512_fp16", "avx512_4vnniw", "avx512_4fmaps")
_NOTABLE = ("avx2", "fma", "avx512f", "avx512bw", "avx512vl", *VNNI_FLAGS, "avx512_bf16", "avx512_fp16", *AMX_FLAGS,
            "asimddp")

# oneDNN's ISA names -> the flags a CPU capped at that level does not have (each level drops
# what the ones above it add). AVX-VNNI goes with AVX-512 VNNI: the AVX2-only CPUs have neither.
_ABOVE = {"avx512_core_bf16": AMX_FLAGS, "avx512_core_vnni": ("avx512_bf16", *AMX_FLAGS)}
_ABOVE["avx512_core"] = (*VNNI_FLAGS, *_ABOVE["avx512_core_vnni"])
_ABOVE["avx2"] = (*_AVX512, *_ABOVE["avx512_core"])
ISA_LEVELS = tuple(name.upper() for name in reversed(_ABOVE))  # weakest first

# (vendor, family) -> [(first model, last model, name)], from the vendors' family/model numbers.
_AMD = {
    23: [(0x00, 0x2F, "Zen / Zen+"), (0x30, 0xFF, "Zen 2")],
    25: [(0x00, 0x0F, "Zen 3"), (0x10, 0x1F, "Zen 4"), (0x20, 0x5F, "Zen 3"), (0x60, 0x7F, "Zen 4"),
         (0xA0, 0xAF, "Zen 4c")],
    26: [(0x00, 0xFF, "Zen 5")],
}
_INTEL_FAMILY6 = {63: "Haswell", 79: "Broadwell", 85: "Skylake-SP", 106: "Ice Lake-SP", 108: "Ice Lake-D",
                  143: "Sapphire Rapids", 207: "Emerald Rapids", 173: "Granite Rapids", 175: "Sierra Forest",
                  140: "Tiger Lake", 141: "Tiger Lake", 151: "Alder Lake", 154: "Alder Lake", 183: "Raptor Lake",
                  186: "Raptor Lake", 191: "Raptor Lake", 170: "Meteor Lake", 197: "Arrow Lake", 198: "Arrow Lake"}


def microarch(vendor: str, family: int | None, model: int | None, stepping: int | None = None) -> str | None:
    """The microarchitecture of a vendor's family/model numbers, None where this table does not know it."""
    if family is None or model is None:
        return None
    if vendor == "AuthenticAMD":
        return next((name for low, high, name in _AMD.get(family, []) if low <= model <= high), None)
    if vendor == "GenuineIntel" and family == 6:
        if model == 85 and stepping is not None:  # one model number, three generations by stepping
            return "Cooper Lake" if stepping >= 10 else "Cascade Lake" if stepping >= 5 else "Skylake-SP"
        return _INTEL_FAMILY6.get(model)
    return None


def isa_limit() -> str | None:
    """The level ``CONVSEG_MAX_CPU_ISA`` caps the probe at (oneDNN's name, lower case), None when unset."""
    value = os.environ.get(ISA_LIMIT_ENV, "").strip().lower()
    if not value or value in ("all", "native"):
        return None
    if value not in _ABOVE:
        from convseg_deploy.errors import ConvSegError

        raise ConvSegError(f"{ISA_LIMIT_ENV}={os.environ[ISA_LIMIT_ENV]!r} is not a level this probe knows: use one of "
                           f"{', '.join(ISA_LEVELS)}, or unset it")
    return value


def _int(text: str) -> int | None:
    try:
        return int(text.strip(), 0)
    except ValueError:
        return None


def read_cpuinfo(cpuinfo: Path = Path("/proc/cpuinfo")) -> tuple[dict[str, str], set[str], int]:
    """(the first value of each field, every flag with those above ``CONVSEG_MAX_CPU_ISA`` removed,
    the count of "processor" lines) of ``cpuinfo``: the one parser of that file."""
    fields: dict[str, str] = {}
    flags: set[str] = set()
    processors = 0
    try:
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key in ("flags", "Features"):  # Features: the line on ARM (Jetson)
                flags = flags or set(value.split())
            elif key:
                fields.setdefault(key, value.strip())
                processors += key == "processor"
    except OSError:
        pass  # not Linux: the flags stay unknown
    limit = isa_limit()
    if limit:
        flags -= set(_ABOVE[limit])
    return fields, flags, processors


def cpu_info(cpuinfo: Path = Path("/proc/cpuinfo"), device_tree: Path = Path("/proc/device-tree/model")) -> dict[str, Any]:
    """What this CPU is and which of the instruction sets that matter it has; ``cores`` counts the
    logical CPUs the file lists (os.cpu_count() where it lists none).

    ``flags_known`` False: not Linux, the flags could not be read. ARM boards such as Jetsons
    have no "model name" line: the board's name from the device tree stands in.
    """
    fields, flags, processors = read_cpuinfo(cpuinfo)
    limit = isa_limit()
    model, vendor = fields.get("model name", ""), fields.get("vendor_id", "")
    if not model:
        try:
            board = device_tree.read_text(errors="replace").strip("\x00\n ")
        except OSError:
            board = ""
        model = f"{board} ({platform.machine()})" if board else platform.processor() or platform.machine()
    family, number = _int(fields.get("cpu family", "")), _int(fields.get("model", ""))
    return {"model": model, "vendor": vendor, "family": family, "model_number": number,
            "microarch": microarch(vendor, family, number, _int(fields.get("stepping", ""))),
            "cores": processors or os.cpu_count(), "flags": [f for f in _NOTABLE if f in flags],
            "avx2": "avx2" in flags, "avx512": "avx512f" in flags,
            "avx512_vnni": "avx512_vnni" in flags, "avx_vnni": "avx_vnni" in flags,
            "avx512_bf16": "avx512_bf16" in flags,
            "vnni": any(f in flags for f in VNNI_FLAGS), "bf16": any(f in flags for f in BF16_FLAGS),
            "amx": any(f in flags for f in AMX_FLAGS),
            "intel": vendor == "GenuineIntel" or "intel" in model.lower(), "flags_known": bool(flags),
            "isa_limit": limit.upper() if limit else None}


# (key, name) of the instruction sets every report names, in the order they are listed.
ISA_NAMES = (("avx2", "AVX2"), ("avx512", "AVX-512"), ("avx512_vnni", "AVX512-VNNI"), ("avx_vnni", "AVX-VNNI"),
             ("avx512_bf16", "AVX512-BF16"), ("amx", "AMX"))


def describe(info: dict[str, Any]) -> str:
    """One line naming the CPU and its instruction sets, for report headers and ``doctor``:
    "AMD EPYC (AMD family 26 model 2, Zen 5), 2 cores; AVX2, AVX-512, ...; no AMX"."""
    numbers = ""
    if info.get("family") is not None:
        vendor = {"AuthenticAMD": "AMD", "GenuineIntel": "Intel"}.get(info.get("vendor", ""), info.get("vendor") or "")
        numbers = f"{vendor} family {info['family']} model {info.get('model_number')}".strip()
    where = ", ".join(p for p in (numbers, info.get("microarch") or "") if p)
    head = f"{info.get('model', '?')}{f' ({where})' if where else ''}, {info.get('cores', '?')} cores"
    if not info.get("flags_known", True):
        return f"{head}; instruction sets unknown"
    have = [name for key, name in ISA_NAMES if info.get(key)]
    lacks = [name for key, name in ISA_NAMES if not info.get(key)]
    limited = f" (capped at {info['isa_limit']} by {ISA_LIMIT_ENV})" if info.get("isa_limit") else ""
    return f"{head}; {', '.join(have) or 'none of AVX2/AVX-512/VNNI/BF16/AMX'}" + (f"; no {', '.join(lacks)}" if lacks else "") + limited


def isa_summary(info: dict[str, Any]) -> dict[str, Any]:
    """The fields a report records next to every number: model, microarchitecture and the flags."""
    keys = ("model", "vendor", "family", "model_number", "microarch", "cores", *(k for k, _ in ISA_NAMES), "vnni",
            "bf16", "isa_limit")
    return {k: info.get(k) for k in keys}


@functools.cache
def this_cpu() -> dict[str, Any]:
    """``cpu_info()`` of this machine, read once per process."""
    return cpu_info()


def available_cpus() -> int:
    """Logical CPUs this process may run on (the affinity mask, e.g. a container's share)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        return os.cpu_count() or 1


def physical_cores() -> int:
    """Physical cores among the CPUs this process may use: hyper-threads share a core's
    vector units, so one thread per core is the fair default for every CPU backend."""
    try:
        cpus = os.sched_getaffinity(0)
    except AttributeError:  # pragma: no cover
        return os.cpu_count() or 1
    cores = set()
    for cpu in cpus:
        topo = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            cores.add(((topo / "physical_package_id").read_text().strip(), (topo / "core_id").read_text().strip()))
        except OSError:
            cores.add(("cpu", str(cpu)))  # no topology (some containers): count it as a core
    return max(len(cores), 1)
