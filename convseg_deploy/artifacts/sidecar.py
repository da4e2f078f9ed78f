"""The ``.engine.json`` sidecar of a TensorRT engine and the rules for where an engine may run.

Engines only run under the TensorRT version and on the GPU architecture that built them, so every
``X.engine`` gets an ``X.engine.json`` sidecar naming both, plus the preprocessing spec, the
threshold and the checksums that ``verify`` checks on the device.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from convseg_deploy.artifacts.names import REBUILD_HINT
from convseg_deploy.errors import ConvSegError

# What every consumer needs; the first six say where the engine may run (see check_engine_compat).
SIDECAR_KEYS = ("tensorrt_version", "cuda_version", "cpu_arch", "os", "compute_capability", "hardware_compat",
                "precision", "profile", "preprocess", "threshold")


def sidecar_path(engine_path: str | os.PathLike) -> Path:
    """``FILE.engine`` -> ``FILE.engine.json``."""
    engine_path = Path(engine_path)
    return engine_path.with_name(engine_path.name + ".json")


def read_sidecar(engine_path: str | os.PathLike) -> dict[str, Any]:
    """The sidecar of an engine, checked for the keys every consumer needs."""
    path = sidecar_path(engine_path)
    if not path.is_file():
        raise ConvSegError(
            f"engine {engine_path} has no sidecar {path.name} (it records the TensorRT version, GPU and "
            f"preprocessing): {REBUILD_HINT}"
        )
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConvSegError(f"sidecar {path} is not valid JSON ({exc}): {REBUILD_HINT}") from None
    missing = [k for k in SIDECAR_KEYS if not isinstance(data, dict) or k not in data]
    if missing:
        raise ConvSegError(f"sidecar {path} lacks {', '.join(missing)}: {REBUILD_HINT}")
    return data


def parse_version3(version: str) -> tuple[int, ...] | None:
    parts = re.findall(r"\d+", str(version))[:3]
    return tuple(int(p) for p in parts) if len(parts) == 3 else None


def parse_version(version: str) -> tuple[int, ...] | None:
    """All numeric parts, build number included ("10.3.0.30" -> (10, 3, 0, 30))."""
    parts = re.findall(r"\d+", str(version))
    return tuple(int(p) for p in parts) if len(parts) >= 3 else None


def parse_capability(capability: str) -> tuple[int, int] | None:
    match = re.fullmatch(r"\s*(\d+)\.(\d+)\s*", str(capability))
    return (int(match.group(1)), int(match.group(2))) if match else None


def sm_name(capability: str) -> str:
    return "sm_" + str(capability).replace(".", "")


def hardware_compat_level(sidecar: dict[str, Any]) -> str:
    """The sidecar's hardware-compatibility level (older sidecars stored a bool for ampere_plus)."""
    level = sidecar.get("hardware_compat", "none")
    if isinstance(level, bool):
        return "ampere_plus" if level else "none"
    return str(level)


def rebuild_command(sidecar: dict[str, Any], bundle: str | os.PathLike | None = None) -> str:
    """The ``build-engine`` command that rebuilds this engine with its own profile and options;
    for an engine of a bundle, the one that rebuilds it into the bundle (and its manifest)."""
    from convseg_deploy.artifacts.io_variants import IO_TENSOR, spatial

    profile = sidecar.get("profile") or {}
    io = str(sidecar.get("io", IO_TENSOR))
    if bundle is not None:
        parts = ["convseg-deploy build-engine --bundle", str(bundle), f"--precision {sidecar.get('precision', '?')}"]
        parts += [] if io == IO_TENSOR else [f"--io {io}"]
    else:
        parts = ["convseg-deploy build-engine", str(sidecar.get("onnx_file", "MODEL.onnx"))]
        if sidecar.get("engine_file"):
            parts += ["--out", str(sidecar["engine_file"])]
    shapes = [profile.get(k) for k in ("min", "opt", "max")]
    if all(isinstance(s, list) and len(s) == 4 for s in shapes):
        parts += [f"--{k}-batch {s[0]}" for k, s in zip(("min", "opt", "max"), shapes)]
        sizes = [spatial(s, io) for s in shapes]
        if sizes[0] != sizes[2]:
            parts += [f"--{k}-size {h} {w}" for k, (h, w) in zip(("min", "opt", "max"), sizes)]
    if hardware_compat_level(sidecar) == "ampere_plus":
        parts.append("--hardware-compat")
    if sidecar.get("version_compatible"):
        parts.append("--version-compatible")
    if sidecar.get("dla_core") is not None:
        parts.append(f"--dla-core {sidecar['dla_core']}" + (" --gpu-fallback" if sidecar.get("gpu_fallback") else ""))
    return " ".join(parts)


def _major(version: str) -> str:
    return str(version).split(".")[0]


def check_engine_compat(sidecar: dict[str, Any], here: dict[str, Any], bundle: str | os.PathLike | None = None) -> str | None:
    """None when the engine can run on ``here`` (``device.engine_target``), else a one-line message
    saying what differs and the command that rebuilds it (into ``bundle`` when it is a bundle's).

    An engine needs the TensorRT build that made it (build number included; a version-compatible
    engine: the same major version, this one or later), the same CUDA major version, CPU
    architecture and OS, and the same GPU architecture (hardware-compatible engines: any Ampere
    or newer GPU).
    """
    built_trt, here_trt = str(sidecar.get("tensorrt_version", "unknown")), str(here.get("tensorrt_version", "unknown"))
    built_v, here_v = parse_version(built_trt), parse_version(here_trt)
    if sidecar.get("version_compatible"):
        trt_ok = built_v is not None and here_v is not None and here_v[0] == built_v[0] and here_v >= built_v
    else:
        trt_ok = built_v is not None and built_v == here_v
    level = hardware_compat_level(sidecar)
    here_cc = parse_capability(str(here.get("compute_capability", "")))
    if level == "ampere_plus":
        gpu_ok, target = here_cc is not None and here_cc >= (8, 0), "any Ampere or newer GPU (sm_80+)"
    else:
        built_cc = str(sidecar.get("compute_capability", "unknown"))
        gpu_ok, target = here_cc is not None and here_cc == parse_capability(built_cc), sm_name(built_cc)
    differs = [what for what, ok in (
        ("TensorRT version", trt_ok),
        ("CUDA major version", _major(sidecar.get("cuda_version", "?")) == _major(here.get("cuda_version", "??"))),
        ("CPU architecture", sidecar.get("cpu_arch") == here.get("cpu_arch")),
        ("OS", sidecar.get("os") == here.get("os")),
        ("GPU architecture", gpu_ok),
    ) if not ok]
    if not differs:
        return None

    def where(d: dict[str, Any], gpu: str) -> str:
        return (f"TensorRT {d.get('tensorrt_version', '?')}, CUDA {d.get('cuda_version', '?')}, "
                f"{d.get('cpu_arch', '?')}/{d.get('os', '?')}, {gpu}")

    name = sidecar.get("engine_file", "engine")
    return (f"engine {name} was built for {where(sidecar, target)}; this device has "
            f"{where(here, sm_name(str(here.get('compute_capability', '?'))))} ({', '.join(differs)} differ): "
            f"rebuild it here with '{rebuild_command(sidecar, bundle)}'")
