"""A Triton Inference Server model repository from exported artifacts (file -> file building).

One model per chosen artifact and serving backend: ``onnxruntime_onnx`` (Triton's ONNX Runtime
backend, on GPUs optionally with its TensorRT execution accelerator at the file's precision),
``python`` (``convseg_deploy/triton/server_model.py`` running the ONNX file with ONNX Runtime: for Tritons
without the ONNX Runtime backend, such as the one in the ``nvidia-pytriton`` wheel) and
``tensorrt_plan`` for engines (``max_batch_size`` from the engine's optimisation profile). Each
model gets ``config.pbtxt`` (inputs/outputs, dynamic batching, instance group) and version
folder ``1``. ONNX files with tensor I/O are wrapped into frames-in/masks-out models (see
``frames_io``) and checked against their source, so clients send camera frames and get masks.
The repository is assembled in a hidden folder and renamed into place when complete.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from convseg_deploy.errors import ConvSegError
from convseg_deploy.fsutil import atomic_dir
from convseg_deploy.artifacts.io_variants import FRAMES_INPUT, IO_FRAMES, IO_TENSOR, MASK_OUTPUT, PROBABILITY_OUTPUT
from convseg_deploy.artifacts.names import INPUT_NAME, OUTPUT_NAME, triton_model_name
from convseg_deploy.exporters.triton_spec import TRT_PRECISION_MODE, VERSION, RepoOptions, Served

@dataclass(frozen=True)
class Tensor:
    name: str
    dtype: str  # Triton's TYPE_* name
    dims: tuple[int, ...]  # without the batch dimension


def _frames_io(height: int, width: int) -> tuple[list[Tensor], list[Tensor]]:
    return ([Tensor(FRAMES_INPUT, "TYPE_UINT8", (height, width, 3))],
            [Tensor(MASK_OUTPUT, "TYPE_UINT8", (height, width)), Tensor(PROBABILITY_OUTPUT, "TYPE_FP32", (height, width))])


def _tensor_io(height: int, width: int) -> tuple[list[Tensor], list[Tensor]]:
    return [Tensor(INPUT_NAME, "TYPE_FP32", (3, height, width))], [Tensor(OUTPUT_NAME, "TYPE_FP32", (1, height, width))]


def _tensors(section: str, tensors: list[Tensor]) -> str:
    items = ",\n".join(f'  {{\n    name: "{t.name}"\n    data_type: {t.dtype}\n    dims: [ {", ".join(map(str, t.dims))} ]\n  }}'
                       for t in tensors)
    return f"{section} [\n{items}\n]\n"


def config_text(name: str, platform: str, max_batch: int, inputs: list[Tensor], outputs: list[Tensor],
                options: RepoOptions, precision: str) -> str:
    """config.pbtxt in protobuf text format (Triton's ModelConfig message)."""
    head = f'name: "{name}"\n' + ('backend: "python"\n' if platform == "python" else f'platform: "{platform}"\n')
    preferred = sorted({b for b in options.preferred_batch if b <= max_batch})
    text = head + f"max_batch_size: {max_batch}\n" + _tensors("input", inputs) + _tensors("output", outputs)
    text += ("dynamic_batching {\n" + "".join(f"  preferred_batch_size: {b}\n" for b in preferred)
             + f"  max_queue_delay_microseconds: {options.queue_delay_us}\n}}\n")
    kind = "KIND_GPU" if options.kind == "gpu" or platform == "tensorrt_plan" else "KIND_CPU"
    text += f"instance_group [\n  {{\n    count: {options.instances}\n    kind: {kind}\n  }}\n]\n"
    mode = TRT_PRECISION_MODE.get(precision)
    if platform == "onnxruntime_onnx" and options.kind == "gpu" and options.trt_accelerator and mode:
        text += ("optimization {\n  execution_accelerators {\n    gpu_execution_accelerator: [\n      {\n"
                 '        name: "tensorrt"\n'
                 f'        parameters {{ key: "precision_mode" value: "{mode}" }}\n'
                 '        parameters { key: "max_workspace_size_bytes" value: "1073741824" }\n'
                 "      }\n    ]\n  }\n}\n")
    if options.threads and platform in ("onnxruntime_onnx", "python"):
        key = "intra_op_thread_count" if platform == "onnxruntime_onnx" else "intra_op_threads"
        text += f'parameters {{\n  key: "{key}"\n  value: {{ string_value: "{options.threads}" }}\n}}\n'
    return text


def _plan(models: list[dict[str, Any]], options: RepoOptions) -> list[Served]:
    """The models to write, with one-line errors for artifacts Triton cannot serve this way. The
    Holoscan and DeepStream variants (and engines of any variant) are for those frameworks: a
    folder's are left out here."""
    served: list[Served] = []
    models = [m for m in models if m["io"] in ((IO_TENSOR, IO_FRAMES) if m["kind"] == "onnx" else (IO_TENSOR,))]
    by_precision: dict[str, dict[str, Any]] = {}
    for info in models:  # a verified frames.<p>.onnx beats wrapping model.<p>.onnx here
        if info["kind"] == "onnx":
            key = info["precision"]
            if key not in by_precision or FRAMES_INPUT in info["input_shapes"]:
                by_precision[key] = info
    for info in models:
        size = tuple(int(v) for v in info["preprocess"].size)
        if info["kind"] == "engine":
            profile_max = info["input_shapes"].get(INPUT_NAME, {}).get("max") or []
            if len(profile_max) != 4:
                raise ConvSegError(f"engine {info['path']}: its sidecar has no 4-D max profile shape for "
                                   f"'{INPUT_NAME}': rebuild it with 'convseg-deploy build-engine'")
            if options.kind == "cpu":
                raise ConvSegError(f"engine {info['path']} needs a GPU instance: use --kind gpu, or pick ONNX files for CPU servers")
            served.append(Served(triton_model_name(options.name, info["precision"], "tensorrt"), "tensorrt_plan", info["precision"],
                                 info["path"], False, size, int(profile_max[0])))
            continue
        if by_precision.get(info["precision"]) is not info:
            continue
        shapes = info["input_shapes"]
        dims = next(iter(shapes.values()))
        if any(not isinstance(d, int) or d <= 0 for d in dims[1:]):
            raise ConvSegError(f"{info['path']} has a dynamic height/width {dims[1:]}: Triton models here need a fixed "
                               "size; export without --dynamic-size")
        if isinstance(dims[0], int) and dims[0] < options.max_batch:
            raise ConvSegError(f"{info['path']} has a static batch of {dims[0]}, below --max-batch {options.max_batch}: "
                               "export without --static-batch")
        for backend in options.backends:
            platform = "onnxruntime_onnx" if backend == "onnxruntime" else "python"
            served.append(Served(triton_model_name(options.name, info["precision"], backend), platform, info["precision"],
                                 info["path"], FRAMES_INPUT in shapes, size, options.max_batch))
    if not served:
        raise ConvSegError("none of the artifacts can be served: pass ONNX files (model.*.onnx, frames.*.onnx) or engines")
    return served


def collect_models(spec: str) -> list[dict[str, Any]]:
    """Model records (``artifacts.manifest.describe``) of a folder (export folder or bundle) or comma list of files."""
    from convseg_deploy.artifacts.manifest import describe, discover

    records: list[dict[str, Any]] = []
    for item in [Path(s.strip()) for s in spec.split(",") if s.strip()]:
        if item.is_dir():
            found = discover(item)
            if not found:
                raise ConvSegError(f"{item} has no ONNX model or engine: export one with 'convseg-deploy export'")
            records += [describe(p) for p in found]
        elif item.is_file():
            if item.suffix.lower() not in (".onnx", ".engine"):
                raise ConvSegError(f"{item}: Triton serves ONNX files and TensorRT engines here, not {item.suffix or 'this file'}")
            records.append(describe(item))
        else:
            raise ConvSegError(f"artifact {item} not found")
    if not records:
        raise ConvSegError("--artifacts names nothing: pass an export folder, a bundle or model files")
    return records


def _write_model(model: Served, root: Path, options: RepoOptions, check_frames: int) -> None:
    from convseg_deploy.exporters.frames_io import check_wrapped

    version = root / model.name / VERSION
    version.mkdir(parents=True)
    h, w = model.size
    if model.platform == "tensorrt_plan":
        shutil.copy2(model.source, version / "model.plan")
        inputs, outputs = _tensor_io(h, w)
    else:
        target = version / "model.onnx"
        if model.frames:
            shutil.copy2(model.source, target)
        else:
            check_wrapped(model.source, target, check_frames)
        inputs, outputs = _frames_io(h, w)
        if model.platform == "python":
            shutil.copy2(server_model_file(), version / "model.py")
    config = config_text(model.name, model.platform, model.max_batch, inputs, outputs, options, model.precision)
    (root / model.name / "config.pbtxt").write_text(config)


def server_model_file() -> Path:
    """The Python-backend model's source, found without importing it (it imports the server's
    triton_python_backend_utils, which exists only inside Triton)."""
    import importlib.util

    spec = importlib.util.find_spec("convseg_deploy.triton")
    assert spec is not None and spec.submodule_search_locations
    return Path(next(iter(spec.submodule_search_locations))) / "server_model.py"


def write_repository(artifacts: str, out: str | Path, options: RepoOptions, *, check_frames: int = 4) -> list[Served]:
    """Write the repository ``out`` (which must not exist or be an empty folder)."""
    from convseg_deploy.exporters.triton_readme import repository_readme

    options.check()
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConvSegError(f"{out} exists and is not an empty folder: choose a new --out (a model repository is written whole)")
    served = _plan(collect_models(artifacts), options)
    with atomic_dir(out) as tmp:
        for model in served:
            _write_model(model, tmp, options, check_frames)
        (tmp / "README.md").write_text(repository_readme(served, options))
    return served
