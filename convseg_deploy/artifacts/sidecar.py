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

SIDECAR_KEYS = ("tensorrt_version", "compute_capability", "precision", "profile", "preprocess", "threshold")


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


def parse_capability(capability: str) -> tuple[int, int] | None:
    match = re.fullmatch(r"\s*(\d+)\.(\d+)\s*", str(capability))
    return (int(match.group(1)), int(match.group(2))) if match else None


def sm_name(capability: str) -> str:
    return "sm_" + str(capability).replace(".", "")


def check_engine_compat(sidecar: dict[str, Any], trt_version: str, compute_capability: str) -> str | None:
    """None when the engine can run here, else a one-line message saying why not and what to do.

    Engines need the exact TensorRT version (major.minor.patch) that built them. They also need the
    same GPU architecture, unless built hardware-compatible, which runs on any Ampere or newer GPU.
    """
    built_version = str(sidecar.get("tensorrt_version", "unknown"))
    built_cc = str(sidecar.get("compute_capability", "unknown"))
    hardware_compat = bool(sidecar.get("hardware_compat", False))
    here = parse_capability(compute_capability)
    same_version = parse_version3(built_version) is not None and parse_version3(built_version) == parse_version3(trt_version)
    if hardware_compat:
        gpu_ok = here is not None and here >= (8, 0)
        target = "any Ampere or newer GPU (sm_80+)"
    else:
        gpu_ok = here is not None and here == parse_capability(built_cc)
        target = sm_name(built_cc)
    if same_version and gpu_ok:
        return None

    def shown(version: str) -> str:
        v3 = parse_version3(version)
        return ".".join(map(str, v3)) if v3 else version

    name = sidecar.get("engine_file", "engine")
    return (
        f"engine {name} was built with TensorRT {shown(built_version)} for {target}; this device has "
        f"TensorRT {shown(trt_version)} / {sm_name(compute_capability)}: {REBUILD_HINT}"
    )
