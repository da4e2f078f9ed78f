"""``verify``: prove on the device that a bundle is intact and that its models run here.

Per file: the checksum and size in the manifest (an entry without them, or whose path leaves
the bundle, fails; so does a model file the manifest does not list); per ONNX model: that ONNX Runtime loads it with
the manifest's preprocessing, and one smoke inference on the bundled reference frame whose mask
must match the expected one (Dice >= 0.99; >= 0.97 for INT8, the export's agreement minimum);
per engine: that its sidecar names this device's TensorRT version and GPU architecture and the
bundled ONNX file (and sha256) it was built from, then the same smoke run against the mask of
that ONNX file. The I/O variants (``frames_artifacts``: frames, Holoscan and DeepStream input)
get the same checks, their ONNX files smoke-run on ONNX Runtime CPU fed as their framework feeds
them; their engines are checked for the device but not run (their framework runs them).

Verdict: every checksum must hold, no loadable model may fail, and at least one model must pass
its smoke run. An engine this machine has no TensorRT (or GPU, or pycuda) for is reported as
"cannot run here" and does not fail the bundle by itself: the ONNX models carry it. An engine
that TensorRT here would reject (other version or GPU) fails, with the rebuild hint.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from convseg_deploy.config import PreprocessSpec
from convseg_deploy.artifacts.bundle_manifest import read_bundle
from convseg_deploy.artifacts.io_variants import IO_TENSOR
from convseg_deploy.artifacts.manifest import MODEL_LISTS, check_file, discover, listed_files
from convseg_deploy.artifacts.names import DEFAULT_MIN_AGREEMENT, MODEL_SUFFIXES
from convseg_deploy.errors import ConvSegError, MissingDependencyError
from convseg_deploy.imaging import read_image, read_mask
from convseg_deploy.metrics import image_scores

# The export's agreement minimums; FP32 against its own reference as strictly as FP16.
MIN_DICE = {"fp32": DEFAULT_MIN_AGREEMENT["fp16"], **DEFAULT_MIN_AGREEMENT}
OK, FAIL, CANNOT = "ok", "FAIL", "cannot run here"


@dataclass
class Row:
    """One line of the verify table; ``note`` says why a check did not pass."""

    file: str
    kind: str  # onnx | engine | sidecar | reference
    checksum: str = "-"
    load: str = "-"
    smoke: str = "-"
    status: str = OK
    note: str = ""

    def fail(self, note: str) -> None:
        self.status, self.note = FAIL, "; ".join(n for n in (self.note, note) if n)


@dataclass
class Verdict:
    bundle: Path
    rows: list[Row] = field(default_factory=list)

    @property
    def models(self) -> list[Row]:
        return [r for r in self.rows if r.kind in ("onnx", "engine")]

    @property
    def ok(self) -> bool:
        return all(r.status != FAIL for r in self.rows) and any(r.status == OK for r in self.models)

    def problems(self) -> list[str]:
        bad = [f"{r.file} ({r.note})" for r in self.rows if r.status == FAIL]
        if not bad and not any(r.status == OK for r in self.models):
            bad = ["no model in the bundle can run on this machine"]
        return bad


def _checksum(bundle: Path, record: dict[str, Any], row: Row) -> bool:
    row.checksum, detail = check_file(bundle, record)
    if row.checksum != OK:
        row.fail(detail)
    return row.checksum == OK


def _smoke(run: Any, row: Row, rgb: np.ndarray | None, expected: np.ndarray | None, precision: str) -> None:
    """``run(rgb)`` -> bool mask, compared with the bundled expected mask."""
    if rgb is None:
        row.smoke = "skipped"
        row.fail("reference/input.png is damaged, so nothing could be compared")
        return
    try:
        mask = run(rgb)
    except ConvSegError as exc:
        row.smoke = "failed"
        row.fail(str(exc))
        return
    if expected is None:
        row.smoke = "ran"
        row.note = row.note or "no expected mask in the bundle to compare with"
        return
    dice = image_scores(mask, expected)["dice"]
    minimum = MIN_DICE.get(precision, 0.99)
    row.smoke = f"dice {dice:.4f}"
    if dice < minimum:
        row.fail(f"smoke mask Dice {dice:.4f} vs the bundled expected mask is below {minimum}")


def _load_expected(bundle: Path, name: str | None, damaged: set[str]) -> np.ndarray | None:
    if not name or name in damaged:
        return None
    return read_mask(bundle / name)


def _onnx(bundle: Path, entry: dict[str, Any], row: Row, spec: PreprocessSpec, threshold: float,
          rgb: np.ndarray | None, expected: np.ndarray | None, provider: str, backend: str = "onnxruntime") -> None:
    from convseg_deploy.deploy.bundle import reference_mask
    from convseg_deploy.runtime import make_runner

    try:
        runner = make_runner(bundle / entry["file"], backend, provider)
        runner.activate()
    except ConvSegError as exc:
        row.load = "failed"
        row.fail(str(exc))
        return
    try:
        if runner.preprocess != spec or abs(float(runner.threshold) - threshold) > 1e-9:
            row.load = "mismatch"
            row.fail("its preprocessing or threshold differs from the manifest's: re-create the bundle")
            return
        row.load = OK
        _smoke(lambda frame: reference_mask(runner, frame), row, rgb, expected, entry.get("precision", ""))
    finally:
        runner.deactivate()


def _variant_onnx(bundle: Path, entry: dict[str, Any], row: Row, spec: PreprocessSpec, threshold: float,
                  rgb: np.ndarray | None, expected: np.ndarray | None) -> None:
    """An I/O variant: its metadata against the manifest, then one smoke run on ONNX Runtime CPU."""
    from convseg_deploy.artifacts.io_variants import io_of
    from convseg_deploy.artifacts.onnx_meta import preprocess_from_metadata, read_metadata
    from convseg_deploy.ort_session import run_variant

    path = bundle / entry["file"]
    try:
        meta = read_metadata(path)
        file_spec, file_threshold = preprocess_from_metadata(meta, str(path))
    except ConvSegError as exc:
        row.load = "failed"
        row.fail(str(exc))
        return
    if file_spec != spec or abs(file_threshold - threshold) > 1e-9 or io_of(meta) != entry.get("io"):
        row.load = "mismatch"
        row.fail(f"its preprocessing, threshold or I/O ({io_of(meta)}) differs from the manifest's: re-create the bundle")
        return
    row.load = OK
    _smoke(lambda frame: run_variant(path, frame[None])[0], row, rgb, expected, entry.get("precision", ""))


def _source_problem(bundle: Path, sidecar: dict[str, Any], manifest: dict[str, Any]) -> str | None:
    """Why an engine's sidecar does not tie it to a bundled ONNX file, or None. An engine whose
    ONNX file is not in the bundle (``bundle --pick`` of the engine alone) is not judged."""
    onnx = {e.get("file"): e for key in MODEL_LISTS for e in manifest.get(key, [])
            if isinstance(e, dict) and e.get("kind", "onnx") == "onnx"}
    source = onnx.get(sidecar.get("onnx_file"))
    if source is None or sidecar.get("onnx_sha256") is None or sidecar["onnx_sha256"] == source.get("sha256"):
        return None
    from convseg_deploy.artifacts.sidecar import rebuild_command

    return (f"it was built from another {sidecar.get('onnx_file')} (sha256 {str(sidecar['onnx_sha256'])[:12]}..., the bundle's "
            f"is {str(source.get('sha256'))[:12]}...): rebuild it with '{rebuild_command(sidecar, bundle)}'")


def _engine(bundle: Path, entry: dict[str, Any], row: Row, rgb: np.ndarray | None,
            expected: np.ndarray | None, manifest: dict[str, Any]) -> None:
    from convseg_deploy.deploy.bundle import reference_mask
    from convseg_deploy.deploy.select import engine_compat
    from convseg_deploy.runtime.tensorrt_runner import TensorRTRunner
    from convseg_deploy.artifacts.sidecar import read_sidecar

    path = bundle / entry["file"]
    try:
        sidecar = read_sidecar(path)
        status, why = engine_compat(sidecar, bundle=bundle)
    except ConvSegError as exc:
        row.load = "failed"
        row.fail(str(exc))
        return
    stale = _source_problem(bundle, sidecar, manifest)
    if stale:
        row.load = "stale"
        row.fail(stale)
        return
    if status == "unavailable":
        row.load = row.status = CANNOT
        row.note = f"{why}; built with TensorRT {entry.get('tensorrt_version')} for sm_" \
                   f"{str(entry.get('compute_capability')).replace('.', '')}: verify it on its device"
        return
    if status == "incompatible":
        row.load = "incompatible"
        row.fail(why)
        return
    if entry.get("io", IO_TENSOR) != IO_TENSOR:
        row.load = OK
        row.note = f"{why}; a {entry.get('io')} engine runs inside its framework, so it is checked for this device, not run"
        return
    try:
        with TensorRTRunner(path) as runner:
            row.load = OK
            _smoke(lambda frame: reference_mask(runner, frame), row, rgb, expected, entry.get("precision", ""))
    except (ConvSegError, MissingDependencyError) as exc:
        if row.load != OK:
            row.load = "failed"
        row.fail(str(exc))


def verify_bundle(bundle: str | Path, provider: str = "cpu", backend: str = "onnxruntime") -> Verdict:
    """Check every file of ``bundle`` and smoke-run every model that can run here; the ONNX models
    on ``backend`` (onnxruntime with ``provider`` cpu|cuda, or openvino with cpu|gpu|npu)."""
    bundle = Path(bundle)
    if not bundle.is_dir():
        raise ConvSegError(f"bundle folder {bundle} not found")
    manifest = read_bundle(bundle)
    try:
        spec = PreprocessSpec.from_dict(manifest["preprocess"])
        threshold = float(manifest["threshold"])
    except (KeyError, TypeError, ValueError):
        raise ConvSegError(f"{bundle}/manifest.json has no preprocessing spec or threshold: re-create the bundle") from None
    verdict = Verdict(bundle)
    damaged: set[str] = set()
    for record in manifest.get("reference", {}).get("files", []):
        row = Row(record.get("file", "?"), "reference")
        if not _checksum(bundle, record, row):
            damaged.add(row.file)
        verdict.rows.append(row)
    reference = manifest.get("reference", {}).get("input")
    rgb = read_image(bundle / reference) if reference and reference not in damaged else None
    listed = listed_files(bundle)
    for path in discover(bundle):
        if path.name not in listed:  # predict never runs it, but a bundle must hold what it says and no more
            verdict.rows.append(Row(path.name, MODEL_SUFFIXES[path.suffix.lower()], status=FAIL,
                                    note="a model file the manifest does not list: remove it or re-create the bundle"))
    for entry in [e for key in MODEL_LISTS for e in manifest.get(key, [])]:
        entry = entry if isinstance(entry, dict) else {}
        kind = entry.get("kind", "engine" if str(entry.get("file", "")).endswith(".engine") else "onnx")
        row = Row(entry.get("file", "?"), kind)
        verdict.rows.append(row)
        intact = _checksum(bundle, entry, row)
        if kind == "engine" and isinstance(entry.get("sidecar"), dict):
            side = Row(entry["sidecar"].get("file", "?"), "sidecar")
            verdict.rows.append(side)
            if not _checksum(bundle, entry["sidecar"], side):
                intact = False
                row.fail(f"its sidecar {side.file} is damaged")
        if not intact:
            row.load = row.smoke = "skipped"
            continue
        expected = _load_expected(bundle, entry.get("expected"), damaged)
        if kind == "onnx" and entry.get("io", IO_TENSOR) != IO_TENSOR:
            _variant_onnx(bundle, entry, row, spec, threshold, rgb, expected)
        elif kind == "onnx":
            _onnx(bundle, entry, row, spec, threshold, rgb, expected, provider, backend)
        else:
            _engine(bundle, entry, row, rgb, expected, manifest)
    return verdict


def format_table(verdict: Verdict) -> str:
    """The per-file table, then one note line per file that needs one."""
    head = ("file", "checksum", "load", "smoke", "status")
    cells = [head] + [(r.file, r.checksum, r.load, r.smoke, r.status) for r in verdict.rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    notes = [f"  {r.file}: {r.note}" for r in verdict.rows if r.note]
    return "\n".join(lines + ([""] + notes if notes else []))
