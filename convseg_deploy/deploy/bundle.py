"""``bundle``: copy chosen models into a self-checking folder for a device.

A bundle holds the model files (ONNX and/or TensorRT engines with their sidecars; the export's
I/O variants for Triton, Holoscan and DeepStream under ``frames_artifacts``), a reference frame
with the mask every ONNX model gives on it, ``USAGE.txt`` and ``manifest.json`` (format
BUNDLE_FORMAT): per file its sha256 and size, precision and input shapes; the preprocessing spec
and threshold; for engines the TensorRT version, GPU and the ONNX file they were built from;
bench numbers when a report is found. It is assembled in a hidden folder that is renamed into
place when complete. Engines built later on the device join it through ``build-engine --bundle``
(``artifacts.bundle_manifest``).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from convseg_deploy.version import __version__
from convseg_deploy.config import PreprocessSpec
from convseg_deploy.artifacts.bundle_manifest import engine_entry, file_record, list_key, write_bundle_files
from convseg_deploy.artifacts.io_variants import IO_TENSOR
from convseg_deploy.artifacts.manifest import (
    MODEL_LISTS,
    describe,
    discover,
    file_problem,
    listed_entries,
    manifest_models,
    read_manifest,
    tied_engines,
)
from convseg_deploy.artifacts.names import BUNDLE_FORMAT, PRECISIONS
from convseg_deploy.artifacts.sidecar import read_sidecar
from convseg_deploy.errors import ConvSegError
from convseg_deploy.fsutil import atomic_dir

REFERENCE_SEED = 1729  # fixed: the reference frame must be the same whenever a bundle is rebuilt
BENCH_KEYS = ("backend", "provider", "precision", "batch_size", "status", "fps", "e2e_fps", "latency_ms", "dice",
              "agreement")


def _candidates(artifacts: Path) -> list[Path]:
    """The model files of ``artifacts``: exactly those its manifest lists, I/O variants included
    (plus engines built from them), so files of an earlier export never travel; every model file
    when it has no manifest."""
    if (artifacts / "manifest.json").is_file():
        return [p for key in MODEL_LISTS for p in manifest_models(artifacts, key)]
    return discover(artifacts)


def _select(artifacts: Path, picks: Sequence[str]) -> list[dict[str, Any]]:
    """Describe the picked model files (all when no pick), in a stable order without repeats."""
    found = _candidates(artifacts)
    if not picks:
        if not found:
            raise ConvSegError(f"{artifacts} has no ONNX model or engine: export one with 'convseg-deploy export'")
        return [describe(p) for p in found]
    described = {p: describe(p) for p in found}
    chosen: dict[Path, dict[str, Any]] = {}
    for pick in picks:
        if pick in PRECISIONS:
            matches = [p for p, info in described.items() if info["precision"] == pick]
            if not matches:
                have = ", ".join(sorted({i["precision"] for i in described.values()})) or "none"
                raise ConvSegError(f"--pick {pick}: {artifacts} has no {pick} model (it has {have})")
            chosen.update({p: described[p] for p in matches})
            continue
        path = Path(pick) if Path(pick).is_file() else artifacts / pick
        if not path.is_file():
            raise ConvSegError(f"--pick {pick}: neither a precision ({', '.join(PRECISIONS)}) nor a model file")
        if path.parent.resolve() == artifacts.resolve() and path.resolve() not in {p.resolve() for p in described}:
            raise ConvSegError(f"--pick {pick}: {artifacts}/manifest.json does not list it (an earlier export's file?)")
        chosen[path.resolve()] = described.get(path) or describe(path)
    names = [info["file"] for info in chosen.values()]
    if len(set(names)) != len(names):
        raise ConvSegError(f"two picked files share the name {next(n for n in names if names.count(n) > 1)}: rename one")
    return sorted(chosen.values(), key=lambda info: info["file"])


def _check_consistent(models: list[dict[str, Any]]) -> tuple[PreprocessSpec, float]:
    first = models[0]
    for other in models[1:]:
        if other["preprocess"] != first["preprocess"] or other["threshold"] != first["threshold"]:
            raise ConvSegError(
                f"{first['file']} and {other['file']} differ in preprocessing or threshold: they come from different "
                "exports, so bundle them separately"
            )
    return first["preprocess"], first["threshold"]


def _check_against_export(artifacts: Path, models: list[dict[str, Any]]) -> dict[str, Any]:
    """The export manifest (if any); a file that changed since export stops the bundle."""
    if not (artifacts / "manifest.json").is_file():
        return {}
    manifest = read_manifest(artifacts)
    listed = {}
    for key in MODEL_LISTS:
        entries = listed_entries(artifacts, key)
        listed.update({e["file"]: e for e in entries + tied_engines(artifacts, entries)})
    for info in models:
        record = listed.get(info["file"])
        if record and info["path"].parent.resolve() == artifacts.resolve():
            problem = file_problem(artifacts, record)
            if problem:
                raise ConvSegError(f"{artifacts}/{problem} against the export manifest: re-export it")
    return manifest


def _bench(artifacts: Path, report: Path | None) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """Where the bench report came from, and its result rows (empty without a report)."""
    path = report or artifacts / "bench" / "report.json"
    if not path.is_file():
        if report is not None:
            raise ConvSegError(f"bench report {report} not found")
        return None, []
    try:
        data = json.loads(path.read_text())
        rows = [r for r in data["results"] if isinstance(r, dict)]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ConvSegError(f"bench report {path} is not a bench report.json ({type(exc).__name__}): re-run bench") from None
    source = {"report": str(path)}
    source.update({k: data[k] for k in ("created", "machine", "device") if k in data})
    return source, rows


def reference_frame(size: tuple[int, int]) -> np.ndarray:
    """The synthetic frame (RGB uint8, with a polyp) every bundle at this size is checked on."""
    from convseg_deploy.synth import render_frame

    h, w = size
    frame, _ = render_frame(np.random.default_rng(REFERENCE_SEED), max(h, w), empty_fraction=0.0)
    return np.ascontiguousarray(frame[:h, :w])


def reference_mask(runner: Any, rgb: np.ndarray) -> np.ndarray:
    """The bool mask an active runner gives on ``rgb``, through predict's one postprocessing path."""
    from convseg_deploy.deploy.predict import postprocess
    from convseg_deploy.imaging import preprocess

    logits = runner.infer(preprocess([rgb], runner.preprocess))
    return postprocess(logits[0, 0], rgb.shape[:2], runner.threshold)[1]


def _expected_masks(tmp: Path, models: list[dict[str, Any]], rgb: np.ndarray) -> dict[str, str]:
    """reference/expected_<precision>.png per tensor ONNX model (ONNX Runtime CPU), and
    reference/expected_<file stem>.png per I/O variant, fed as its framework feeds it; file -> mask name."""
    from convseg_deploy.deploy.render import write_png
    from convseg_deploy.ort_session import run_variant
    from convseg_deploy.runtime.onnxruntime_runner import OnnxRuntimeRunner

    masks: dict[str, str] = {}
    for info in (m for m in models if m["kind"] == "onnx"):
        name = f"reference/expected_{info['precision']}.png"
        if info["io"] != IO_TENSOR or name in masks.values():  # a variant, or two ONNX files of one precision
            name = f"reference/expected_{Path(info['file']).stem}.png"
        if info["io"] == IO_TENSOR:
            with OnnxRuntimeRunner(tmp / info["file"], provider="cpu") as runner:
                mask = reference_mask(runner, rgb)
        else:
            mask = run_variant(tmp / info["file"], rgb[None])[0]
        write_png(tmp / name, mask.astype(np.uint8) * 255)
        masks[info["file"]] = name
    return masks


def _source(engine: dict[str, Any], onnx_entries: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The bundled ONNX entry the engine was built from, else a bundled ONNX of its precision and I/O."""
    for entry in onnx_entries:
        if entry["file"] == engine.get("onnx_file"):
            return entry
    same = [e for e in onnx_entries if e["precision"] == engine["precision"] and e.get("io", IO_TENSOR) == engine["io"]]
    return same[0] if same else None


def _prepare_out(out: Path, artifacts: Path) -> None:
    if out.resolve() == artifacts.resolve():
        raise ConvSegError(f"--out {out} must not be the artifacts folder itself: choose a new folder")
    if out.exists():
        is_bundle = (out / "manifest.json").is_file() and read_manifest(out).get("format") == BUNDLE_FORMAT
        if not out.is_dir() or (any(out.iterdir()) and not is_bundle):
            raise ConvSegError(f"{out} exists and is not a bundle: choose a new --out (an old bundle would be replaced)")


def make_bundle(artifacts: str | os.PathLike, out: str | os.PathLike, picks: Sequence[str] = (),
                report: str | os.PathLike | None = None, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Write the bundle folder ``out`` from the models in ``artifacts``; return its manifest."""
    from convseg_deploy.deploy.render import write_png

    artifacts, out = Path(artifacts), Path(out)
    if not artifacts.is_dir():
        raise ConvSegError(f"artifacts folder {artifacts} not found")
    models = _select(artifacts, picks)
    spec, threshold = _check_consistent(models)
    export = _check_against_export(artifacts, models)
    bench_source, bench_rows = _bench(artifacts, Path(report) if report else None)
    _prepare_out(out, artifacts)
    with atomic_dir(out) as tmp:
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; a bundle is copied and read by others
        (tmp / "reference").mkdir()
        for info in models:
            log(f"copying {info['file']}")
            shutil.copyfile(info["path"], tmp / info["file"])
            if info["kind"] == "engine":
                shutil.copyfile(info["sidecar_path"], tmp / info["sidecar_path"].name)
        rgb = reference_frame(spec.size)
        write_png(tmp / "reference" / "input.png", rgb)
        log("computing the reference masks (ONNX Runtime CPU)")
        masks = _expected_masks(tmp, models, rgb)
        onnx_entries = []
        for info in (m for m in models if m["kind"] == "onnx"):
            entry = {**file_record(tmp, info["file"]), "kind": "onnx", "precision": info["precision"],
                     "input_shapes": info["input_shapes"], "opset": info["opset"], "expected": masks[info["file"]],
                     "expected_from": info["file"], "io": info["io"]}
            onnx_entries.append(entry)
        engines = [engine_entry(tmp, info["file"], info["sidecar_path"].name, read_sidecar(info["path"]),
                                _source(info, onnx_entries)) for info in models if info["kind"] == "engine"]
        lists: dict[str, list[dict[str, Any]]] = {key: [] for key in MODEL_LISTS}
        for entry in sorted(onnx_entries + engines, key=lambda e: e["file"]):
            # by checksum: a report of an earlier export's file of the same name must not join
            entry["bench"] = [{k: r[k] for k in BENCH_KEYS if k in r} for r in bench_rows
                              if r.get("sha256") == entry["sha256"]]
            lists[list_key(entry.get("io", IO_TENSOR))].append(entry)
        references = [file_record(tmp, name) for name in ["reference/input.png", *sorted(set(masks.values()))]]
        manifest = {
            "format": BUNDLE_FORMAT,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "convseg_deploy": __version__,
            "source": str(artifacts.resolve()),
            "preprocess": spec.to_dict(),
            "threshold": threshold,
            "model": export.get("model", {}),
            "reference": {"input": "reference/input.png", "seed": REFERENCE_SEED, "files": references},
            "artifacts": lists["artifacts"],
            **({key: lists[key] for key in MODEL_LISTS[1:] if lists[key]}),
            "bench": bench_source,
        }
        write_bundle_files(tmp, out.name, manifest)
    return manifest
