"""A bundle's manifest entries for engines, its USAGE.txt, and how an engine built on the device joins it.

``bundle`` writes a bundle whole; ``build-engine --bundle`` later adds one engine to it, on the
device. Both describe an engine with ``engine_entry`` and write the manifest and USAGE.txt with
``write_bundle_files``, so a bundle reads the same whichever made it. The entry records what
``verify`` and ``predict`` check: the engine's and its sidecar's sha256 and size, the ONNX file
and sha256 it was built from, the TensorRT version and the GPU.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from convseg_deploy.artifacts.io_variants import IO_TENSOR, io_of
from convseg_deploy.artifacts.manifest import MODEL_LISTS, VARIANT_LIST, entry_problems, read_manifest
from convseg_deploy.artifacts.names import BUNDLE_FORMAT, predict_order_lines
from convseg_deploy.errors import ConvSegError
from convseg_deploy.fsutil import atomic_path, sha256_file, write_json

ENGINE_FROM_SIDECAR = ("tensorrt_version", "compute_capability", "gpu_name", "hardware_compat", "onnx_file",
                       "onnx_sha256", "io")


def file_record(root: Path, name: str) -> dict[str, Any]:
    path = root / name
    return {"file": name, "sha256": sha256_file(path), "size_bytes": path.stat().st_size}


def list_key(io: str) -> str:
    """The manifest list that holds models of I/O variant ``io``."""
    return "artifacts" if io == IO_TENSOR else VARIANT_LIST


def engine_entry(root: Path, engine: str, sidecar_file: str, sidecar: dict[str, Any],
                 source: dict[str, Any] | None) -> dict[str, Any]:
    """The manifest entry of ``root/engine`` (with its sidecar) built from the bundled ONNX entry
    ``source`` (None: no such ONNX in the bundle); its smoke test compares with ``source``'s
    expected mask."""
    profile = sidecar.get("profile", {})
    entry = {**file_record(root, engine), "kind": "engine", "precision": str(sidecar.get("precision", "unknown")),
             "input_shapes": {profile.get("input", "image"): {k: profile.get(k) for k in ("min", "opt", "max")}}}
    entry.update({k: sidecar.get(k) for k in ENGINE_FROM_SIDECAR})
    entry["io"] = io_of(sidecar)
    entry.update(sidecar=file_record(root, sidecar_file), expected=source.get("expected") if source else None,
                 expected_from=source["file"] if source else None)
    return entry


def read_bundle(bundle: Path) -> dict[str, Any]:
    """The manifest of a bundle (not an export folder), or a one-line error."""
    manifest = read_manifest(bundle)
    if manifest.get("format") != BUNDLE_FORMAT:
        raise ConvSegError(f"{bundle} is not a bundle (its manifest is {manifest.get('format')!r}): make one with "
                           "'convseg-deploy bundle --artifacts ... --out ...'")
    return manifest


def framework_bundle(bundle: Path, needs: str) -> dict[str, Any]:
    """The manifest of the bundle a framework writer (deepstream, holoscan) was given, or a
    one-line error saying what it ``needs``."""
    if not bundle.is_dir():
        raise ConvSegError(f"{bundle} is not a bundle folder: {needs}")
    return read_bundle(bundle)


def variant_entries(manifest: dict[str, Any], io: str) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """The bundle's ONNX files and engines of I/O variant ``io``, by precision."""
    entries = [e for e in manifest.get(VARIANT_LIST, []) if isinstance(e, dict) and e.get("io") == io]
    onnx = {str(e.get("precision")): e for e in entries if e.get("kind", "onnx") == "onnx"}
    engines = {str(e.get("precision")): e for e in entries if e.get("kind") == "engine"}
    return onnx, engines


def model_files(manifest: dict[str, Any]) -> str:
    """The bundle's plain model files, comma-separated ("none" if it has none): what an error
    about a missing framework variant lists, so the user sees what the bundle does hold."""
    return ", ".join(str(e["file"]) for e in manifest.get("artifacts", []) if isinstance(e, dict) and "file" in e) or "none"


def refuse_damaged(bundle: Path, entries: list[dict[str, Any]], use: str) -> None:
    """A one-line error for the first of ``entries`` that no longer matches the manifest; ``use``
    says what would have used it ("the configuration would name it")."""
    for entry in entries:
        problems = entry_problems(bundle, entry)
        if problems:
            raise ConvSegError(f"{bundle}/{problems[0]}: {use}; run 'convseg-deploy verify {bundle}' and re-copy "
                               "the bundle")


def check_variant_engine(bundle: Path, engine: dict[str, Any], onnx: dict[str, Any], io: str, consumer: str) -> None:
    """A framework's engine was built from the bundle's ONNX file and takes batch 1 (``consumer``,
    the framework's element that sends one frame at a time, for the message)."""
    from convseg_deploy.artifacts.sidecar import read_sidecar

    sidecar = read_sidecar(bundle / engine["file"])
    if sidecar.get("onnx_sha256") != onnx.get("sha256"):
        raise ConvSegError(f"{engine['file']} was not built from this bundle's {onnx['file']}: rebuild it with "
                           f"'convseg-deploy build-engine --bundle {bundle} --precision {engine['precision']} "
                           f"--io {io}'")
    low = (sidecar.get("profile") or {}).get("min") or [1]
    if int(low[0]) > 1:
        raise ConvSegError(f"{engine['file']} takes batches of {low[0]} and more; {consumer} sends 1: rebuild it "
                           "with --min-batch 1")


def bundle_onnx(manifest: dict[str, Any], precision: str, io: str) -> dict[str, Any] | None:
    """The bundle's ONNX entry of ``precision`` and I/O variant ``io``, or None."""
    for entry in manifest.get(list_key(io), []):
        if isinstance(entry, dict) and entry.get("kind", "onnx") == "onnx" and entry.get("precision") == precision \
                and str(entry.get("io", IO_TENSOR)) == io:
            return entry
    return None


def without_file(manifest: dict[str, Any], name: str) -> dict[str, Any]:
    """A copy of ``manifest`` without the entry of model file ``name``, in whichever list."""
    result = copy.deepcopy(manifest)
    for key in MODEL_LISTS:
        if key in result:
            result[key] = [e for e in result[key] if not (isinstance(e, dict) and e.get("file") == name)]
    return result


def with_entry(manifest: dict[str, Any], entry: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``manifest`` with ``entry`` in its list (replacing one of the same file)."""
    result = without_file(manifest, entry["file"])
    key = list_key(str(entry.get("io", IO_TENSOR)))
    result[key] = sorted([*result.get(key, []), entry], key=lambda e: e["file"])
    return result


def write_bundle_files(root: Path, name: str, manifest: dict[str, Any]) -> None:
    """USAGE.txt, then manifest.json (last: a manifest means every file it lists is there)."""
    with atomic_path(root / "USAGE.txt") as tmp:
        tmp.write_text(usage_text(name, manifest))
    write_json(root / "manifest.json", manifest)


def _row(entry: dict[str, Any]) -> str:
    where = (f" TensorRT {entry.get('tensorrt_version')}, sm_{str(entry.get('compute_capability')).replace('.', '')}"
             f", from {entry.get('onnx_file')}" if entry.get("kind") == "engine" else f" opset {entry.get('opset', '-')}")
    return f"  {entry['file']:<28} {entry.get('kind', 'onnx'):<7} {entry.get('precision', '?'):<9}{where}"


def usage_text(name: str, manifest: dict[str, Any]) -> str:
    """The bundle's USAGE.txt: what is inside and the commands to run on the device."""
    spec = manifest["preprocess"]
    variants = manifest.get(VARIANT_LIST, [])
    lines = [
        f"ConvSegNet polyp segmentation bundle ({manifest['created']}, convseg-deploy {manifest['convseg_deploy']})",
        "",
        "Models (predict, verify):",
        *[_row(e) for e in manifest["artifacts"]],
    ]
    if variants:
        lines += ["", "I/O variants for Triton, Holoscan and DeepStream (see docs/devices.md):", *[_row(e) for e in variants]]
    lines += [
        "",
        (f"Input: RGB frames of any size, resized to {spec['size'][0]}x{spec['size'][1]} ({spec['channel_order']}, "
         f"x{spec['scale']:.6g}, mean {spec['mean']}, std {spec['std']}); mask = probability > {manifest['threshold']}."),
        "",
        "On the device (pip install convseg-deploy; add [tensorrt] for engines):",
        f"  convseg-deploy verify {name}        # checksums, TensorRT/GPU match, one smoke inference per model",
        f"  convseg-deploy predict --model {name} VIDEO_OR_IMAGES --out results --overlay",
        "  convseg-deploy doctor               # what this machine can run",
        "",
        "TensorRT engines only run under the TensorRT version and on the GPU architecture that built them,",
        "so build them on the device itself, into this bundle:",
        f"  convseg-deploy build-engine --bundle {name} --precision fp16       # adds model.fp16.engine",
        *([f"  convseg-deploy build-engine --bundle {name} --precision fp16 --io {io}   # adds {io}.fp16.engine"
           for io in sorted({str(e.get('io')) for e in variants if e.get("kind", "onnx") == "onnx"})]),
        "The engine and its sidecar join manifest.json (sha256, size, the ONNX file and sha256 it was built",
        "from, TensorRT version, GPU); verify checks it and predict prefers it on this GPU. On another GPU or",
        "TensorRT, verify and predict refuse it and print the build-engine command that rebuilds it.",
        *(["", "DeepStream (nvinfer config, gst-launch-1.0 line, deepstream-app config, mask probe):",
           f"  convseg-deploy deepstream --model {name} --out deepstream"]
          if any(e.get("io") == "deepstream" for e in variants) else []),
        "",
        "predict --backend auto tries, best first (--precision fp32|fp16|int8|int8-cpu picks one):",
        *predict_order_lines(),
        "manifest.json lists every file's sha256; reference/ holds the smoke-test frame and expected masks.",
        "",
    ]
    return "\n".join(lines)
