"""What to run: one row per backend x artifact x provider/precision x batch size.

Planning only looks at file names, manifests and sidecars; nothing is loaded here, so a broken
artifact still gets its row (and fails there, with its reason, while the others run).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from convseg_deploy.errors import ConvSegError
from convseg_deploy.benchmarks.row import Row
from convseg_deploy.runtime import BACKENDS, SUFFIX_BACKEND

PROVIDERS = ("cpu", "cuda", "tensorrt", "gpu", "npu")  # gpu, npu: Intel devices, for OpenVINO only
ORT_PROVIDERS = ("cpu", "cuda", "tensorrt")
# bf16 = autocast + channels_last on CPUs with BF16 (skipped elsewhere); fp16 = autocast, CUDA only
TORCH_PRECISIONS = {"cpu": ("fp32", "bf16"), "cuda": ("fp32", "fp16")}
_PRECISION_IN_NAME = re.compile(r"\.(fp32|fp16|int8-cpu|int8)\.(?:onnx|engine|plan)$")


def precision_from_name(path: Path) -> str:
    """``model.int8-cpu.onnx`` -> ``int8-cpu``; ``unknown`` when the name does not say."""
    found = _PRECISION_IN_NAME.search(path.name)
    return found.group(1) if found else "unknown"


def _engine_precision(path: Path) -> str:
    sidecar = path.with_name(path.name + ".json")
    try:
        return str(json.loads(sidecar.read_text()).get("precision")) or precision_from_name(path)
    except (OSError, ValueError, AttributeError):
        return precision_from_name(path)  # the runner reports the missing/broken sidecar itself


def _from_folder(folder: Path) -> list[tuple[Path, str]]:
    """The files of an export folder's manifest (and engines built from them) and nothing else,
    so an earlier export's leftovers are never measured; every model file without a manifest."""
    from convseg_deploy.artifacts.manifest import listed_entries, tied_engines

    if (folder / "manifest.json").is_file():
        entries = listed_entries(folder)
        found = [(folder / e["file"], str(e.get("precision") or precision_from_name(Path(e["file"])))) for e in entries]
        return found + [(folder / e["file"], _engine_precision(folder / e["file"])) for e in tied_engines(folder, entries)]
    onnx = sorted(folder.glob("model.*.onnx")) or sorted(folder.glob("*.onnx"))
    engines = sorted(p for ext in ("*.engine", "*.plan") for p in folder.glob(ext))
    return [(p, precision_from_name(p)) for p in onnx] + [(p, _engine_precision(p)) for p in engines]


def collect_artifacts(spec: str | None) -> list[tuple[Path, str]]:
    """(file, precision guess) for every model file named by --artifacts: a folder (its manifest,
    its model.*.onnx and *.engine files) or comma-separated files."""
    if not spec:
        return []
    items = [Path(s.strip()) for s in spec.split(",") if s.strip()]
    out: list[tuple[Path, str]] = []
    for item in items:
        if item.is_dir():
            found = _from_folder(item)
            if not found:
                raise ConvSegError(f"artifact folder {item} has no model.*.onnx or .engine files: export first")
            out += found
        elif item.is_file():
            suffix = item.suffix.lower()
            if suffix not in SUFFIX_BACKEND:
                raise ConvSegError(f"{item} is not a model file: pass .onnx, .engine or .pt files, or a folder")
            out.append((item, _engine_precision(item) if SUFFIX_BACKEND[suffix] == "tensorrt" else precision_from_name(item)))
        else:
            raise ConvSegError(f"artifact {item} not found")
    unique: dict[Path, tuple[Path, str]] = {}
    for path, precision in out:  # a file named twice (folder and file) is measured once
        unique.setdefault(path.resolve(), (path, precision))
    return list(unique.values())


def check_choices(values: list[str], allowed: tuple[str, ...], option: str) -> list[str]:
    """``values`` unchanged, or a one-line error naming the first unknown one."""
    for value in values:
        if value not in allowed:
            raise ConvSegError(f"{option}: unknown value {value!r}; use one of {', '.join(allowed)}")
    return values


def plan_rows(
    checkpoint: Path | None,
    artifacts: str | None,
    backends: list[str],
    providers: list[str],
    batch_sizes: list[int],
) -> list[Row]:
    """Every row to run, in a stable order: PyTorch, ONNX Runtime, OpenVINO, then TensorRT."""
    check_choices(backends, BACKENDS, "--backends")
    check_choices(providers, PROVIDERS, "--providers")
    if not batch_sizes or any(b < 1 for b in batch_sizes):
        raise ConvSegError(f"--batch-sizes must be positive integers, got {batch_sizes}")
    files = collect_artifacts(artifacts)
    checkpoints = ([checkpoint] if checkpoint else []) + [p for p, _ in files if SUFFIX_BACKEND[p.suffix.lower()] == "torch"]
    runners: list[tuple[str, str, str, Path]] = []
    for ckpt in checkpoints:
        runners += [("torch", prov, prec, ckpt) for prov in providers for prec in TORCH_PRECISIONS.get(prov, ())]
    onnx = [(p, prec) for p, prec in files if SUFFIX_BACKEND[p.suffix.lower()] == "onnxruntime"]
    runners += [("onnxruntime", prov, prec, p) for p, prec in onnx for prov in providers if prov in ORT_PROVIDERS]
    runners += [("tensorrt", "tensorrt", prec, p) for p, prec in files if SUFFIX_BACKEND[p.suffix.lower()] == "tensorrt"]
    rows = [Row(b, prov, prec, path, bs) for b, prov, prec, path in runners if b in backends for bs in batch_sizes]
    if "openvino" in backends:
        from convseg_deploy.benchmarks.openvino_rows import openvino_rows

        rows += openvino_rows(onnx, providers, batch_sizes)
    missing = {"torch": "no --checkpoint given" if not checkpoints else "PyTorch runs on the cpu or cuda provider only",
               "onnxruntime": "no .onnx among --artifacts, or no cpu/cuda/tensorrt among --providers",
               "openvino": "no .onnx among --artifacts, or no cpu/gpu/npu among --providers",
               "tensorrt": "no .engine among --artifacts (build one with 'convseg-deploy build-engine')"}
    for backend in backends:
        if not any(r.backend == backend for r in rows):
            rows.append(Row(backend, "-", "-", None, batch_sizes[0], note=missing[backend]))
    order = {b: i for i, b in enumerate(BACKENDS)}
    return sorted(rows, key=lambda r: order[r.backend])  # stable: keeps the order within a backend


def artifact_input_sizes(rows: list[Row]) -> set[tuple[int, int]]:
    """The input sizes the ONNX files and engines of ``rows`` were built for (from their metadata
    or sidecar; an unreadable artifact is left out here: its own row reports why)."""
    from convseg_deploy.artifacts.onnx_meta import read_metadata
    from convseg_deploy.artifacts.sidecar import read_sidecar

    sizes = set()
    for artifact in {r.artifact for r in rows if r.backend != "torch" and r.artifact is not None}:  # once per file
        try:
            meta = read_sidecar(artifact) if artifact.suffix == ".engine" else read_metadata(artifact)
            sizes.add(tuple(int(v) for v in meta["preprocess"]["size"]))
        except Exception:  # noqa: BLE001 - reported by the row itself
            continue
    return sizes
