"""Which model file and backend ``predict`` uses, and opening its runner.

For a bundle (or an export folder) without ``--precision``, the order is
``convseg_deploy.artifacts.names.PREDICT_ORDER`` (the reasons are written there): TensorRT engines
that match this device, then ONNX on ONNX Runtime CUDA, then OpenVINO's device (CPU unless
``--device``, on Intel CPUs where OpenVINO is installed; always exact f32 inference: bf16 is a
bench row), then ONNX Runtime CPU. A precision an order leaves out (the TensorRT-flavour ``int8``
file on OpenVINO) is never chosen there.

``--precision`` keeps only that precision, ``--backend`` only that backend (``openvino`` on the
``--device`` cpu, gpu or npu). Choices that cannot
run here (no TensorRT, an engine built elsewhere, a CUDA provider that does not load) are
skipped with a note; a wrong checksum is never skipped: it stops the run.
"""

from __future__ import annotations

import contextlib
import functools
import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from convseg_deploy.artifacts.names import predict_order
from convseg_deploy.errors import ConvSegError, MissingDependencyError, shorten
from convseg_deploy.runtime import backend_for, make_runner
from convseg_deploy.runtime.base import Runner

ENGINE_ORDER = predict_order("tensorrt", "tensorrt")
CUDA_ORDER = predict_order("onnxruntime", "cuda")
OPENVINO_ORDER = predict_order("openvino", "cpu")
CPU_ORDER = predict_order("onnxruntime", "cpu")
BACKEND_CHOICES = ("auto", "torch", "onnxruntime", "openvino", "tensorrt")
OPENVINO_DEVICES = ("cpu", "gpu", "npu")
_LABELS = {("tensorrt", "tensorrt"): "TensorRT", ("onnxruntime", "cuda"): "ONNX Runtime (CUDA)",
           ("onnxruntime", "cpu"): "ONNX Runtime (CPU)", ("torch", "cuda"): "PyTorch (CUDA)",
           ("torch", "cpu"): "PyTorch (CPU)", ("torch", "auto"): "PyTorch", ("openvino", "cpu"): "OpenVINO (CPU)",
           ("openvino", "gpu"): "OpenVINO (Intel GPU)", ("openvino", "npu"): "OpenVINO (NPU)"}


class CannotRunHere(ConvSegError):
    """This machine lacks what a model needs (TensorRT, its GPU, a provider): try the next one.

    machine_wide: the lack applies to every model of that backend and provider (no TensorRT),
        not just this one (an engine built for another GPU), so the others are skipped too.
    """

    def __init__(self, message: str, machine_wide: bool = False) -> None:
        super().__init__(message)
        self.machine_wide = machine_wide


@dataclass
class Choice:
    """One way to run a model: a file, a backend and a provider; ``entry`` is its manifest record."""

    path: Path
    backend: str  # torch | onnxruntime | openvino | tensorrt
    provider: str  # cpu | cuda | tensorrt | gpu | npu (OpenVINO) | auto (torch: CUDA when PyTorch sees a GPU)
    precision: str
    entry: dict[str, Any] | None = None

    @property
    def label(self) -> str:
        return f"{self.path.name} on {_LABELS.get((self.backend, self.provider), self.backend)}"


def engine_compat(sidecar: dict[str, Any], device: int = 0, bundle: Path | None = None) -> tuple[str, str]:
    """("ok", where), ("unavailable", why) or ("incompatible", rebuild message) for CUDA device
    ``device``; the rebuild message of an engine of ``bundle`` rebuilds it into the bundle."""
    from convseg_deploy.hardware.gpu import engine_target, import_pycuda, import_tensorrt
    from convseg_deploy.artifacts.sidecar import check_engine_compat

    try:
        trt = import_tensorrt()
    except MissingDependencyError:
        return "unavailable", "TensorRT is not installed here"
    try:
        import_pycuda()  # installed but broken raises: that is a failure, not "unavailable"
    except MissingDependencyError:
        return "unavailable", "pycuda is not installed here (TensorRT runs need it)"
    # pycuda imports, so the probe answers from it and never falls back to importing torch.
    here = engine_target(str(trt.__version__), device)
    if here is None:
        return "unavailable", f"no CUDA GPU {device} here"
    problem = check_engine_compat(sidecar, here, bundle)
    if problem:
        return "incompatible", problem
    return "ok", f"TensorRT {trt.__version__} on {here['gpu_name']} (sm_{here['compute_capability'].replace('.', '')})"


@functools.cache
def provider_loads(name: str) -> tuple[bool, str]:
    """Whether ONNX Runtime's provider ``name`` really loads here (listed is not enough), and why not.

    A session on a one-node in-memory model is created with that provider alone; ONNX Runtime
    falls back to the CPU when a GPU provider's libraries are missing, so the first provider of
    the session tells. Its default logger is silenced meanwhile: the failure is the answer here.
    """
    import onnxruntime as ort
    from onnx import TensorProto, helper

    if name not in ort.get_available_providers():
        return False, f"this onnxruntime build does not list {name}"
    value = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "probe", [value], [out])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    opts = ort.SessionOptions()
    opts.log_severity_level = 4
    ort.set_default_logger_severity(4)
    quiet = io.StringIO()
    try:
        # ORT prints ("EP Error ... Falling back") when a provider fails: keep it off stdout (doctor --json).
        with contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
            session = ort.InferenceSession(model.SerializeToString(), sess_options=opts, providers=[name])
        loaded = session.get_providers()[0]
    except Exception as exc:  # noqa: BLE001 - ORT raises its own exception hierarchy
        return False, f"{name} did not load: {shorten(str(exc), 300)}"
    finally:
        ort.set_default_logger_severity(2)  # ONNX Runtime's default: warnings
    if loaded != name:
        return False, f"{name} is listed but did not load (CUDA/cuDNN or TensorRT libraries missing?)"
    return True, ""


def openvino_preferred() -> bool:
    """Whether ``--backend auto`` tries OpenVINO on the CPU: an Intel CPU and OpenVINO installed
    (looked up, not imported: planning stays cheap; a broken install is skipped at activation)."""
    import importlib.util

    from convseg_deploy.hardware.cpu import this_cpu

    return bool(this_cpu()["intel"]) and importlib.util.find_spec("openvino") is not None


def _file_precision(model: Path) -> str:
    """The precision an ONNX file's metadata names ("?" when it names none or cannot be read:
    the runner then reports what is wrong with the file)."""
    from convseg_deploy.artifacts.onnx_meta import read_metadata

    try:
        return str(read_metadata(model).get("precision", "?"))
    except ConvSegError:
        return "?"


def _rank(order: tuple[str, ...], precision: str) -> int:
    return order.index(precision) if precision in order else len(order)


def plan(model: Path, backend: str = "auto", precision: str | None = None, device: str = "cpu") -> list[Choice]:
    """The ways to run ``model`` (a file, a bundle or an export folder), best first. ``device`` is
    OpenVINO's (cpu, gpu, npu) for ``--backend openvino``."""
    if backend not in BACKEND_CHOICES:
        raise ConvSegError(f"unknown backend {backend!r}: use one of {', '.join(BACKEND_CHOICES)}")
    if device not in OPENVINO_DEVICES:
        raise ConvSegError(f"unknown OpenVINO device {device!r}: use one of {', '.join(OPENVINO_DEVICES)}")
    if model.is_dir():
        return _plan_folder(model, backend, precision, device)
    if not model.is_file():
        raise ConvSegError(f"model {model} not found: pass a .pt, .onnx or .engine file or a bundle folder")
    implied = backend_for(model)
    if backend == "openvino" and implied == "onnxruntime":
        if precision is not None:
            raise ConvSegError("--precision picks a model from a bundle; with a single model file, drop it")
        return [Choice(model, "openvino", device, "?")]
    if backend not in ("auto", implied):
        raise ConvSegError(f"{model.name} runs on {implied}, not {backend}: drop --backend or pass another model")
    if precision is not None:
        raise ConvSegError("--precision picks a model from a bundle; with a single model file, drop it")
    if implied == "onnxruntime":
        # --backend onnxruntime means ONNX Runtime: OpenVINO joins only the auto order, and only
        # for a file of a precision its order holds (an explicit --backend openvino is obeyed)
        intel = [Choice(model, "openvino", "cpu", "?")] if backend == "auto" and openvino_preferred() \
            and _file_precision(model) in (*OPENVINO_ORDER, "?") else []
        return [Choice(model, implied, "cuda", "?"), *intel, Choice(model, implied, "cpu", "?")]
    return [Choice(model, implied, "tensorrt" if implied == "tensorrt" else "auto", "?")]


def _plan_folder(folder: Path, backend: str, precision: str | None, device: str = "cpu") -> list[Choice]:
    from convseg_deploy.artifacts.manifest import folder_models

    entries = folder_models(folder)
    if precision is not None:
        kept = [e for e in entries if e["precision"] == precision]
        if not kept:
            have = ", ".join(sorted({e["precision"] for e in entries}))
            raise ConvSegError(f"{folder} has no {precision} model (it has {have}): pick one of those with --precision")
        entries = kept
    if backend == "torch":
        raise ConvSegError(f"{folder} holds ONNX models and engines, not PyTorch checkpoints: use --backend auto")
    engines = sorted((e for e in entries if e["kind"] == "engine"), key=lambda e: _rank(ENGINE_ORDER, e["precision"]))
    onnx = [e for e in entries if e["kind"] == "onnx"]
    choices: list[Choice] = []
    if backend in ("auto", "tensorrt"):
        choices += [Choice(folder / e["file"], "tensorrt", "tensorrt", e["precision"], e) for e in engines]
    ways = []  # (backend, provider, order), best first
    if backend in ("auto", "onnxruntime"):
        ways.append(("onnxruntime", "cuda", CUDA_ORDER))
    if backend == "openvino" or (backend == "auto" and openvino_preferred()):
        ways.append(("openvino", device, OPENVINO_ORDER))
    if backend in ("auto", "onnxruntime"):
        ways.append(("onnxruntime", "cpu", CPU_ORDER))
    for name, provider, order in ways:
        ranked = sorted((e for e in onnx if e["precision"] in order), key=lambda e: _rank(order, e["precision"]))
        choices += [Choice(folder / e["file"], name, provider, e["precision"], e) for e in ranked]
    if backend == "openvino" and not choices and onnx:
        raise ConvSegError(f"{folder}'s {', '.join(sorted({e['precision'] for e in onnx}))} model(s) are not for "
                           f"OpenVINO, which runs {', '.join(OPENVINO_ORDER)}: pick one of those with --precision, or "
                           "use --backend onnxruntime")
    if not choices:
        kind = "engine" if backend == "tensorrt" else "model"
        raise ConvSegError(f"{folder} has no {kind} to run" + (f" in {precision}" if precision else ""))
    return choices


def _activate(choice: Choice, device: int = 0, threads: int | None = None, spin: bool = True) -> Runner:
    """Check what can be checked cheaply, then load; CannotRunHere/MissingDependencyError mean skip."""
    if choice.entry is not None:
        from convseg_deploy.artifacts.manifest import entry_problems

        problems = entry_problems(choice.path.parent, choice.entry)
        if problems:  # a damaged bundle is never silently worked around
            raise ConvSegError(f"{problems[0]}: run 'convseg-deploy verify {choice.path.parent}' and re-copy the bundle")
    provider = choice.provider
    if choice.backend == "tensorrt":
        from convseg_deploy.artifacts.sidecar import read_sidecar

        from convseg_deploy.artifacts.manifest import is_bundle

        folder = choice.path.parent
        bundle = folder if choice.entry is not None and is_bundle(folder) else None
        status, why = engine_compat(read_sidecar(choice.path), device, bundle)
        if status == "incompatible":
            raise CannotRunHere(why)
        if status != "ok":
            raise CannotRunHere(f"TensorRT engines cannot run here: {why}", machine_wide=True)
    elif choice.backend == "onnxruntime" and provider == "cuda":
        loads, why = provider_loads("CUDAExecutionProvider")
        if not loads:
            raise CannotRunHere(why, machine_wide=True)
    elif choice.backend == "torch":
        import torch  # a checkpoint needs PyTorch anyway

        provider = "cuda" if torch.cuda.is_available() else "cpu"
        choice.provider = provider
    runner = make_runner(choice.path, choice.backend, provider, device=device, threads=threads, spin=spin)
    runner.activate()
    return runner


def open_runner(choices: list[Choice], log: Callable[[str], None] = print, device: int = 0,
                threads: int | None = None, spin: bool = True) -> tuple[Runner, Choice]:
    """Activate the first choice that runs here (GPU choices on CUDA device ``device``; CPU
    backends on ``threads`` threads, None: the backend's default; ``spin``: see
    ``runtime.make_runner``); the caller deactivates the runner."""
    skipped: list[str] = []
    dead: set[tuple[str, str]] = set()  # (backend, provider) pairs this machine cannot run at all
    for choice in choices:
        if (choice.backend, choice.provider) in dead:
            continue
        try:
            runner = _activate(choice, device, threads, spin)
        except (CannotRunHere, MissingDependencyError) as exc:
            if len(choices) == 1:
                raise
            if isinstance(exc, MissingDependencyError) or exc.machine_wide:
                dead.add((choice.backend, choice.provider))
                skipped.append(f"{_LABELS.get((choice.backend, choice.provider))}: {exc}")
            else:
                skipped.append(f"{choice.label}: {exc}")
            continue
        for note in skipped:
            log(f"skipped {note}")
        return runner, choice
    raise ConvSegError("no model can run here: " + "; ".join(skipped))
