"""Run the planned rows and collect raw results; judging happens later, in ``gates``.

Each runner is loaded once and measures all its batch sizes: accuracy once (per-image Dice
and IoU at the model's input size), then per batch size model-only latency (``timing``; GPU
runners also device time from CUDA events), end-to-end throughput over the dataset and peak
memory (reset before each row).

Skipped means "not installed here": a backend whose package is absent (MissingDependencyError,
ModuleNotFoundError) or a GPU backend on a machine with no NVIDIA driver at all. A backend that
is installed but fails to initialise or load (a CUDA driver that fails, a provider that is
listed but does not load, a broken library) is ``failed``, which fails the run; so is any other
exception, with a one-line reason, and the next row goes on.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from convseg_deploy.benchmarks.gates import PackedMasks
from convseg_deploy.benchmarks.openvino_rows import is_throughput
from convseg_deploy.benchmarks.row import Row
from convseg_deploy.benchmarks.throughput import time_streams
from convseg_deploy.benchmarks.timing import fps_from, latency_stats, time_model
from convseg_deploy.data import Sample, find_samples, load_samples, split_samples
from convseg_deploy import errors
from convseg_deploy.errors import ConvSegError, MissingDependencyError
from convseg_deploy.fsutil import sha256_file
from convseg_deploy.evaluate import evaluate_masks, predict_masks
from convseg_deploy.batching import iter_batches
from convseg_deploy.imaging import preprocess, probability_at, read_image
from convseg_deploy.runtime import make_runner
from convseg_deploy.runtime.base import Runner

MAX_REASON = 300


@dataclass
class Settings:
    """How long to time each row. ``threads`` goes to every CPU backend alike."""

    warmup: int = 3
    iters: int | None = 20
    duration: float | None = None
    warmup_s: float = 0.0  # warm-up also lasts at least this long
    device: int = 0  # CUDA device of the GPU rows
    threads: int | None = None
    progress: bool = True
    torch_size: tuple[int, int] | None = None  # input size of the PyTorch rows [the checkpoint's]


@dataclass
class Dataset:
    """The frames to run on. ``no_accuracy`` says why Dice cannot be computed (None: it can)."""

    root: Path
    samples: list[Sample]
    no_accuracy: str | None
    _cache: dict[tuple[int, int], tuple[np.ndarray, np.ndarray | None]] = field(default_factory=dict)

    def at(self, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray | None]:
        """Frames (and masks when every frame has one) decoded once per input size."""
        if size not in self._cache:
            self._cache[size] = load_samples(self.samples, size)
        return self._cache[size]


@dataclass
class RunOutput:
    results: list[dict[str, Any]]
    masks: dict[str, PackedMasks]  # runner_key -> predicted masks, for agreement


def load_dataset(root: Path, split: str = "all", max_images: int | None = None, seed: int = 42) -> Dataset:
    """The bench's frames; a folder of images without masks gives a speed-only dataset."""
    samples = split_samples(find_samples(root, require_masks=False), split, root, seed=seed)
    if max_images is not None:
        samples = samples[:max_images]
    if not samples:
        raise ConvSegError(f"the {split} split of {root} has no images")
    missing = sum(s.mask is None for s in samples)
    reason = None
    if missing == len(samples):
        reason = f"no ground-truth masks in {root}: speed only"
    elif missing:
        reason = f"{missing} of {len(samples)} images in {root} have no mask: accuracy needs one for every image"
    return Dataset(root, samples, reason)


def one_line(exc: BaseException) -> str:
    """A short reason for a report cell (``errors.one_line`` at the report's cell width)."""
    return errors.one_line(exc, MAX_REASON)


def _size_mb(path: Path | None) -> float | None:
    try:
        return path.stat().st_size / 2**20 if path else None
    except OSError:
        return None


def _sha256(path: Path | None) -> str | None:
    try:
        return sha256_file(path) if path else None
    except OSError:
        return None  # its row reports the unreadable file


def row_result(row: Row, status: str, reason: str | None = None) -> dict[str, Any]:
    """A report row for ``row`` with ``status`` and every measurement still empty."""
    return {
        "backend": row.backend, "provider": row.provider, "precision": row.precision,
        "artifact": str(row.artifact) if row.artifact else None, "batch_size": row.batch_size,
        "status": status, "reason": reason, "latency_ms": None, "iters": None, "fps": None, "e2e_fps": None,
        "dice": None, "iou": None, "dice_drop": None, "agreement": None, "accuracy_reason": None,
        "size_mb": _size_mb(row.artifact), "peak_memory_mb": None, "device_ms": None, "runner_key": row.runner_key,
    }


def e2e_fps(runner: Runner, paths: list[Path], batch_size: int) -> float:
    """Images per second from files to full-size masks: decode, preprocess, infer, resize back
    to the source size and threshold."""
    spec, threshold = runner.preprocess, runner.threshold
    runner.synchronize()
    start = time.perf_counter()
    for sl in iter_batches(len(paths), batch_size):
        frames = [read_image(p) for p in paths[sl]]
        logits = runner.infer(preprocess(frames, spec))
        for frame, logit in zip(frames, logits):
            probability_at(logit[0], frame.shape[:2]) > threshold  # noqa: B015 - the work being timed
    runner.synchronize()
    return len(paths) / (time.perf_counter() - start)


def _needs_gpu_probe(row: Row) -> bool:
    # ONNX Runtime prints pages of errors when a GPU provider cannot load; ask first.
    return row.backend == "onnxruntime" and row.provider in ("cuda", "tensorrt")


_GPU: dict[str, tuple[str, str] | None] = {}  # probed once per run_rows call


def _gpu_problem(device: int) -> tuple[str, str] | None:
    """None when CUDA device ``device`` answers; else ("skipped", why) on a machine without an
    NVIDIA driver, ("failed", why) where a driver is installed and the GPU does not answer."""
    if "problem" not in _GPU:
        from convseg_deploy.hardware.gpu import cuda_device_info, gpu_expected, list_gpus

        problem = None
        if cuda_device_info(device) is None:
            count = len(list_gpus())
            if count:
                problem = ("failed", f"CUDA device {device} does not exist: this machine has {count} GPU(s)")
            elif gpu_expected():
                problem = ("failed", "an NVIDIA driver is installed but no CUDA GPU answers: check nvidia-smi")
            else:
                problem = ("skipped", "no CUDA GPU found on this machine")
        _GPU["problem"] = problem
    return _GPU["problem"]


def _accuracy(runner: Runner, key: str, dataset: Dataset, batch_size: int, masks: dict[str, PackedMasks]) -> dict[str, Any]:
    return accuracy_of(lambda images: predict_masks(runner, images, batch_size), runner.preprocess.size, key, dataset, masks)


def accuracy_of(predict: Callable[[np.ndarray], np.ndarray], size: tuple[int, int], key: str, dataset: Dataset,
                masks: dict[str, PackedMasks]) -> dict[str, Any]:
    """Dice and IoU of ``predict`` (frames at ``size`` -> bool masks) on the dataset; its masks
    are kept under ``key`` for agreement. Also serves backends that are not runners (Triton)."""
    images, targets = dataset.at(size)
    try:
        preds = predict(images)
    except Exception as exc:  # noqa: BLE001 - reported in the rows; speed may still work
        return {"accuracy_reason": f"accuracy pass failed: {one_line(exc)}"}
    masks[key] = PackedMasks.pack(preds)
    if targets is None:
        return {"accuracy_reason": dataset.no_accuracy}
    metrics = evaluate_masks(preds, targets)
    return {"dice": float(metrics["dice"]), "iou": float(metrics["iou"])}


def _measure(runner: Runner, row: Row, dataset: Dataset, settings: Settings, accuracy: dict[str, Any]) -> dict[str, Any]:
    result = row_result(row, "ok")
    info = getattr(runner, "info", None)
    if info is not None and info.precision not in ("", "unknown"):
        result["precision"] = info.precision  # the file's own metadata beats its name
    result.update(accuracy)
    result["input_size"] = list(runner.preprocess.size)
    try:
        images, _ = dataset.at(runner.preprocess.size)
        idx = np.arange(row.batch_size) % len(images)  # repeat frames when the set is smaller than the batch
        batch = preprocess(images[idx], runner.preprocess)
        runner.reset_peak_memory()  # each row its own peak, not the largest batch's so far
        if is_throughput(row):  # several requests in flight: images/s over the wall time, per-request latency
            result.update(time_streams(runner, batch, warmup=settings.warmup, iters=settings.iters,
                                       duration=settings.duration))
        else:
            device_ms: list[float] = []
            seconds = time_model(runner, batch, warmup=settings.warmup, iters=settings.iters, duration=settings.duration,
                                 warmup_s=settings.warmup_s, device_ms=device_ms)
            stats = latency_stats(seconds)
            result.update(latency_ms=stats, iters=int(seconds.size), fps=fps_from(stats, row.batch_size))
            result["device_ms"] = latency_stats(np.asarray(device_ms) / 1e3) if device_ms else None
        result["peak_memory_mb"] = runner.peak_memory_mb()  # before e2e: the model's own, at this batch size
        result["e2e_fps"] = e2e_fps(runner, [s.image for s in dataset.samples], row.batch_size)
    except Exception as exc:  # noqa: BLE001 - one row failing must not stop the others
        failed = row_result(row, "failed", one_line(exc))
        failed["precision"] = result["precision"]
        return failed
    return result


def _all(rows: list[Row], status: str, reason: str | None, bar: tqdm) -> list[dict[str, Any]]:
    bar.update(len(rows))
    return [row_result(r, status, reason) for r in rows]


def _run_runner(rows: list[Row], dataset: Dataset, settings: Settings, masks: dict[str, PackedMasks],
                bar: tqdm) -> list[dict[str, Any]]:
    """All rows of one runner (same backend, provider, precision and artifact)."""
    first = rows[0]
    bar.set_description(first.label)
    if first.artifact is None:
        return _all(rows, "skipped", first.note, bar)
    if _needs_gpu_probe(first) and (problem := _gpu_problem(settings.device)):
        return _all(rows, problem[0], problem[1], bar)
    try:
        precision = first.precision if first.backend == "torch" else "fp32"  # others read it from the file
        runner = make_runner(first.artifact, first.backend, first.provider, threads=settings.threads, precision=precision,
                             device=settings.device, options=dict(first.options) or None)
        runner.activate()
        note = None
        own = tuple(runner.preprocess.size)
        if first.backend == "torch" and settings.torch_size and tuple(settings.torch_size) != own:
            runner.preprocess = replace(runner.preprocess, size=tuple(settings.torch_size))  # compare like with like
            note = f"runs at {settings.torch_size[0]}x{settings.torch_size[1]} (the checkpoint's own size is {own[0]}x{own[1]})"
    except (MissingDependencyError, ModuleNotFoundError) as exc:  # not installed here; anything else is broken
        return _all(rows, "skipped", one_line(exc), bar)
    except Exception as exc:  # noqa: BLE001 - a broken artifact fails its rows only
        return _all(rows, "failed", one_line(exc), bar)
    out = []
    try:
        limit = runner.max_batch()
        smallest = min(r.batch_size for r in rows)
        accuracy = _accuracy(runner, first.runner_key, dataset, min(smallest, limit or smallest), masks)
        for row in rows:
            bar.set_description(f"{row.label} bs{row.batch_size}")
            if limit is not None and row.batch_size > limit:  # the backend would reject it: not the model's fault
                fix = f"rebuild with --max-batch {row.batch_size}" if row.backend == "tensorrt" else \
                    "re-export without --static-batch"
                out.append(row_result(row, "skipped", f"batch {row.batch_size} exceeds the model's largest batch "
                                                   f"({limit}): {fix}"))
            else:
                out.append({**_measure(runner, row, dataset, settings, accuracy), "input_note": note})
            bar.update(1)
    finally:
        runner.deactivate()
    return out


def run_rows(rows: list[Row], dataset: Dataset, settings: Settings) -> RunOutput:
    """Run every row (grouped by runner, in plan order) and return the raw results."""
    groups: dict[str, list[Row]] = {}
    for row in rows:
        groups.setdefault(row.runner_key, []).append(row)
    results: list[dict[str, Any]] = []
    masks: dict[str, PackedMasks] = {}
    _GPU.clear()
    with tqdm(total=len(rows), file=sys.stderr, unit="row", disable=None if settings.progress else True,
              leave=False) as bar:
        for group in groups.values():
            digest = _sha256(group[0].artifact)  # bundles join bench rows to their files by this
            results += [{**r, "sha256": digest} for r in _run_runner(group, dataset, settings, masks, bar)]
    return RunOutput(results, masks)
