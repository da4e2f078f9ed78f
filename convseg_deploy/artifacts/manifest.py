"""The bundle manifest and the model records behind it, shared by bundle, verify and predict.

A record describes one model file: ``file``, ``kind`` (onnx | engine), ``precision``, and in a
manifest ``sha256`` and ``size_bytes`` (engines also a ``sidecar`` record with both).

``artifacts`` lists the tensor-I/O models (``model.<p>.onnx`` and engines built from them), the
ones our runners run; ``frames_artifacts`` lists the I/O variants (``frames``, ``holoscan``,
``deepstream``: ``artifacts.io_variants``) and engines built from those, for the frameworks
that feed them. Both lists follow the same rules.

The manifest is the truth: a folder with one is used through the files it lists and nothing
else, and every listed file must carry a sha256 and a size and be a plain relative path inside
the folder (no ``..``, no absolute path, no symlink out), so a record cannot skip its check or
point at a model the folder does not hold.
"""

from __future__ import annotations

import json
import re
from pathlib import Path, PurePosixPath
from typing import Any

from convseg_deploy.artifacts.names import BUNDLE_FORMAT, MODEL_SUFFIXES
from convseg_deploy.errors import ConvSegError
from convseg_deploy.fsutil import sha256_file

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


VARIANT_LIST = "frames_artifacts"  # where a manifest lists the I/O variants and their engines
MODEL_LISTS = ("artifacts", VARIANT_LIST)


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
    if not isinstance(data.get(VARIANT_LIST, []), list):
        raise ConvSegError(f"{path} has a {VARIANT_LIST} that is not a list: re-create the bundle")
    return data


def is_bundle(folder: Path) -> bool:
    """Whether ``folder`` holds a bundle (``convseg-deploy bundle``), not an export folder."""
    try:
        return read_manifest(folder).get("format") == BUNDLE_FORMAT
    except ConvSegError:
        return False


def record_problem(folder: Path, record: Any) -> str | None:
    """Why ``record`` cannot be trusted as a manifest entry (checksum, size, path), or None."""
    if not isinstance(record, dict) or not isinstance(record.get("file"), str) or not record["file"]:
        return "an entry has no file name"
    name = record["file"]
    parts = PurePosixPath(name).parts
    if "\\" in name or PurePosixPath(name).is_absolute() or ".." in parts or (parts and ":" in parts[0]):
        return f"{name}: not a plain relative path inside the folder"
    if not isinstance(record.get("sha256"), str) or not _SHA256.match(record["sha256"]):
        return f"{name}: the manifest gives no sha256 for it, so it cannot be checked"
    size = record.get("size_bytes")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        return f"{name}: the manifest gives no size_bytes for it"
    path = folder / name
    if path.is_symlink() or not path.resolve().is_relative_to(folder.resolve()):
        return f"{name}: a symbolic link (a bundle holds its files itself)"
    return None


def check_file(folder: Path, record: dict[str, Any]) -> tuple[str, str]:
    """(state, detail) of ``record``'s file (``file``, ``sha256``, ``size_bytes``) in ``folder``.

    state: ok | invalid (the record itself) | missing | truncated | size differs | mismatch.
    """
    problem = record_problem(folder, record)
    if problem:
        return "invalid", problem.split(": ", 1)[-1]
    path = folder / record["file"]
    if not path.is_file():
        return "missing", "missing"
    size, expected = path.stat().st_size, record["size_bytes"]
    if size < expected:
        return "truncated", f"truncated ({size} of {expected} bytes)"
    if size != expected:
        return "size differs", f"size differs ({size} bytes, the manifest says {expected})"
    if sha256_file(path) != record["sha256"]:
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
    from convseg_deploy.artifacts.onnx_meta import model_opset, get_metadata, load_onnx

    model = load_onnx(path)
    meta = get_metadata(model, str(path))
    weights = {init.name for init in model.graph.initializer}
    shapes = {v.name: [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
                       for d in v.type.tensor_type.shape.dim]
              for v in model.graph.input if v.name not in weights}
    return meta, shapes, model_opset(model)


def describe(path: Path) -> dict[str, Any]:
    """Kind, precision, preprocessing and threshold of a model file, from its metadata or sidecar."""
    from convseg_deploy.artifacts.io_variants import io_of
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
    return {"file": path.name, "kind": kind, "precision": str(meta.get("precision", "unknown")), "io": io_of(meta),
            "preprocess": spec, "threshold": threshold, "path": path, **info}


def discover(folder: Path) -> list[Path]:
    """The ONNX models and engines directly inside ``folder``, sorted by name."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in MODEL_SUFFIXES
                  and not p.name.startswith("."))


def listed_entries(folder: Path, key: str = "artifacts") -> list[dict[str, Any]]:
    """The manifest's model entries of ``folder`` (``key``: its tensor models, or VARIANT_LIST),
    each checked to be a trustworthy record (not yet against its file); the first bad one stops
    with its file named."""
    manifest = read_manifest(folder)
    entries = manifest.get(key, [])
    for entry in entries:
        problem = record_problem(folder, entry)
        if problem is None and isinstance(entry.get("sidecar"), dict):
            problem = record_problem(folder, entry["sidecar"])
        if problem:
            raise ConvSegError(f"{folder / 'manifest.json'}: {problem}: re-export or re-create the bundle")
    return entries


def tied_engines(folder: Path, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Records of the engines in an export folder built (after the export) from one of its listed
    ONNX files: the sidecar names that file and its sha256, so a stale engine never joins the set.
    The engine's own checksum comes from its sidecar."""
    onnx = {e["file"]: e["sha256"] for e in entries if MODEL_SUFFIXES.get(Path(e["file"]).suffix.lower()) == "onnx"}
    listed = {e["file"] for e in entries}
    tied = []
    for path in discover(folder):
        if MODEL_SUFFIXES[path.suffix.lower()] != "engine" or path.name in listed:
            continue
        try:
            sidecar = json.loads((folder / f"{path.name}.json").read_text())
        except (OSError, ValueError):
            continue
        if (isinstance(sidecar, dict) and sidecar.get("onnx_sha256") is not None
                and onnx.get(sidecar.get("onnx_file")) == sidecar["onnx_sha256"]):
            tied.append({"file": path.name, "sha256": sidecar.get("engine_sha256"), "size_bytes": path.stat().st_size})
    return tied


def manifest_models(folder: Path, key: str = "artifacts") -> list[Path]:
    """The model files of a folder with a manifest under ``key`` (its tensor models, or
    VARIANT_LIST): exactly those it lists, plus engines tied to them."""
    entries = listed_entries(folder, key)
    return [folder / e["file"] for e in entries + tied_engines(folder, entries)]


def listed_files(folder: Path) -> set[str]:
    """Every file the manifest of ``folder`` lists, in either list, sidecars included."""
    manifest = read_manifest(folder)
    entries = [e for key in MODEL_LISTS for e in manifest.get(key, []) if isinstance(e, dict)]
    sidecars = [e["sidecar"] for e in entries if isinstance(e.get("sidecar"), dict)]
    return {str(r.get("file")) for r in entries + sidecars}


def folder_models(folder: Path) -> list[dict[str, Any]]:
    """Model records of a bundle or an export folder, from its manifest only.

    Export folders list only their ONNX files in the manifest; an engine built later from one
    of them joins through its sidecar (see ``tied_engines``).
    """
    manifest = read_manifest(folder)
    entries = listed_entries(folder)
    if manifest.get("format") == BUNDLE_FORMAT:
        return [{**e, "kind": e.get("kind", MODEL_SUFFIXES.get(Path(e["file"]).suffix, "onnx"))} for e in entries]
    records = []
    for entry in entries + tied_engines(folder, entries):
        info = describe(folder / entry["file"])
        records.append({"file": entry["file"], "kind": info["kind"], "precision": info["precision"],
                        "sha256": entry["sha256"], "size_bytes": entry["size_bytes"]})
    if not records:
        raise ConvSegError(f"{folder} has no ONNX model or engine")
    return records
