"""The bundle manifest and the model records behind it, shared by bundle, verify and predict.

A record describes one model file: ``file``, ``kind`` (onnx | engine), ``precision``, and in a
manifest ``sha256`` and ``size_bytes`` (engines also a ``sidecar`` record with both).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from convseg_deploy.artifacts.names import BUNDLE_FORMAT, MODEL_SUFFIXES
from convseg_deploy.errors import ConvSegError
from convseg_deploy.fsutil import sha256_file



def read_manifest(folder: Path) -> dict[str, Any]:
    """The ``manifest.json`` of a bundle or export folder, checked for an artifact list."""
    path = folder / "manifest.json"
    if not path.is_file():
        raise ConvSegError(f"{folder} has no manifest.json: it is not a bundle (make one with 'convseg-deploy bundle')")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConvSegError(f"{path} is not valid JSON ({exc}): re-create the bundle") from None
    if not isinstance(data, dict) or not isinstance(data.get("artifacts"), list):
        raise ConvSegError(f"{path} has no artifact list: re-create the bundle")
    return data


def check_file(folder: Path, record: dict[str, Any]) -> tuple[str, str]:
    """(state, detail) of ``record``'s file (``file``, ``sha256``, ``size_bytes``) in ``folder``.

    state: ok | missing | truncated | size differs | mismatch.
    """
    path = folder / record.get("file", "?")
    if not path.is_file():
        return "missing", "missing"
    size, expected = path.stat().st_size, record.get("size_bytes")
    if expected is not None and size < expected:
        return "truncated", f"truncated ({size} of {expected} bytes)"
    if expected is not None and size != expected:
        return "size differs", f"size differs ({size} bytes, the manifest says {expected})"
    if record.get("sha256") and sha256_file(path) != record["sha256"]:
        return "mismatch", "checksum mismatch (tampered or corrupted)"
    return "ok", ""


def file_problem(folder: Path, record: dict[str, Any]) -> str | None:
    """None when ``record``'s file is intact, else "FILE: what is wrong"."""
    state, detail = check_file(folder, record)
    return None if state == "ok" else f"{record.get('file', '?')}: {detail}"


def entry_problems(folder: Path, entry: dict[str, Any]) -> list[str]:
    """Problems of an artifact's file and, for an engine, of its sidecar."""
    records = [entry] + ([entry["sidecar"]] if isinstance(entry.get("sidecar"), dict) else [])
    return [p for p in (file_problem(folder, r) for r in records) if p]


def _onnx_info(path: Path) -> tuple[dict[str, Any], dict[str, list[Any]], int | None]:
    """Metadata, input shapes (dim names where dynamic) and default-domain opset of an ONNX file."""
    import onnx

    from convseg_deploy.artifacts.onnx_meta import get_metadata

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf raises several types
        raise ConvSegError(f"{path} is not a readable ONNX model ({type(exc).__name__}): re-export it") from None
    meta = get_metadata(model, str(path))
    weights = {init.name for init in model.graph.initializer}
    shapes = {v.name: [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
                       for d in v.type.tensor_type.shape.dim]
              for v in model.graph.input if v.name not in weights}
    opset = next((int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    return meta, shapes, opset


def describe(path: Path) -> dict[str, Any]:
    """Kind, precision, preprocessing and threshold of a model file, from its metadata or sidecar."""
    from convseg_deploy.artifacts.onnx_meta import preprocess_from_metadata
    from convseg_deploy.artifacts.sidecar import read_sidecar, sidecar_path

    kind = MODEL_SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise ConvSegError(f"{path} is not an ONNX model or a TensorRT engine (.onnx, .engine)")
    if not path.is_file():
        raise ConvSegError(f"model file {path} not found")
    if kind == "onnx":
        meta, shapes, opset = _onnx_info(path)
        info: dict[str, Any] = {"input_shapes": shapes, "opset": opset}
    else:
        meta = read_sidecar(path)
        profile = meta.get("profile", {})
        info = {"input_shapes": {profile.get("input", "image"): {k: profile.get(k) for k in ("min", "opt", "max")}},
                "tensorrt_version": str(meta["tensorrt_version"]), "compute_capability": str(meta["compute_capability"]),
                "gpu_name": meta.get("gpu_name"), "hardware_compat": bool(meta.get("hardware_compat", False)),
                "onnx_file": meta.get("onnx_file"), "sidecar_path": sidecar_path(path)}
    spec, threshold = preprocess_from_metadata(meta, str(path))
    return {"file": path.name, "kind": kind, "precision": str(meta.get("precision", "unknown")),
            "preprocess": spec, "threshold": threshold, "path": path, **info}


def discover(folder: Path) -> list[Path]:
    """The ONNX models and engines directly inside ``folder``, sorted by name."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in MODEL_SUFFIXES
                  and not p.name.startswith("."))


def folder_models(folder: Path) -> list[dict[str, Any]]:
    """Model records of a bundle (from its manifest) or of an export folder (from its files).

    Export folders list only their ONNX files in the manifest, so their engines are found by
    name; a file the export manifest lists keeps its checksum, so predict can check it.
    """
    manifest = read_manifest(folder)
    if manifest.get("format") == BUNDLE_FORMAT:
        return [{**e, "kind": e.get("kind", MODEL_SUFFIXES.get(Path(e["file"]).suffix, "onnx"))}
                for e in manifest["artifacts"]]
    listed = {e.get("file"): e for e in manifest["artifacts"] if isinstance(e, dict)}
    records = []
    for path in discover(folder):
        known = listed.get(path.name, {})
        info = describe(path)
        records.append({"file": path.name, "kind": info["kind"], "precision": info["precision"],
                        **{k: known[k] for k in ("sha256", "size_bytes") if k in known}})
    if not records:
        raise ConvSegError(f"{folder} has no ONNX model or engine")
    return records
