"""Load-testing a Triton Inference Server, in the spirit of ``perf_analyzer``, for ``bench --backends triton``.

For every READY model of the server that takes camera frames (``frames``: UINT8 N x H x W x 3,
as ``convseg-deploy triton`` writes them; the client calls are ``convseg_deploy.triton.client``):
one accuracy pass over the bench's frames (the returned masks give Dice, and agreement with the
reference row), then per concurrency level C,
C client threads (one client each) send one frame per request, back to back, for the same
number of requests per thread (``--iters``) or seconds (``--duration``) after a warm-up. Rows
report throughput (frames/s over the wall time of the window), client latency percentiles and,
from Triton's statistics API (before/after the window), the mean server queue and compute time
per request and the mean batch the dynamic batcher formed. Rows use the harness's result
format, so they join the same tables, reports and gates.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from convseg_deploy.benchmarks.gates import PackedMasks
from convseg_deploy.benchmarks.harness import Dataset, RunOutput, Settings, row_result, accuracy_of, one_line
from convseg_deploy.benchmarks.row import Row
from convseg_deploy.benchmarks.timing import MIN_ITERS, latency_stats
from convseg_deploy.errors import ConvSegError
from convseg_deploy.batching import iter_batches
from convseg_deploy.triton.client import ServedModel, ask, connect, infer_frames, make_client, served_models

def _stats(client: Any, model: str) -> dict[str, float]:
    stats = ask(client, "get_inference_statistics", model)["model_stats"][0]
    inference = stats.get("inference_stats", {})

    def value(section: str, key: str) -> float:
        return float(inference.get(section, {}).get(key, 0))

    return {"queue_ns": value("queue", "ns"), "queue_count": value("queue", "count"),
            "compute_ns": value("compute_infer", "ns") + value("compute_input", "ns") + value("compute_output", "ns"),
            "compute_count": value("compute_infer", "count"), "inferences": float(stats.get("inference_count", 0)),
            "executions": float(stats.get("execution_count", 0))}


def _window(url: str, protocol: str, model: str, frames: np.ndarray, concurrency: int, settings: Settings,
            client: Any) -> tuple[np.ndarray, float, dict[str, float]]:
    """Client latencies (s) of every request in the timed window, the window's wall time and
    the change of the server's statistics over it (read after the warm-up, and at the end)."""
    clients = [make_client(url, protocol) for _ in range(concurrency)]
    warm, go = threading.Barrier(concurrency + 1), threading.Barrier(concurrency + 1)
    latencies: list[list[float]] = [[] for _ in range(concurrency)]
    errors: list[BaseException] = []
    stop = threading.Event()

    def worker(index: int) -> None:
        client, own = clients[index], latencies[index]
        i = index
        try:
            for _ in range(settings.warmup):
                infer_frames(client, protocol, model, frames[i % len(frames)][None])
                i += 1
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)
        warm.wait()
        go.wait()
        if errors:
            return
        try:
            while not stop.is_set():
                start = time.perf_counter()
                infer_frames(client, protocol, model, frames[i % len(frames)][None])
                own.append(time.perf_counter() - start)
                i += 1
                if settings.iters is not None and len(own) >= settings.iters:
                    return
                if settings.duration is not None and time.perf_counter() - began[0] >= settings.duration \
                        and len(own) >= MIN_ITERS:
                    return
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
            stop.set()

    began = [0.0]
    threads = [threading.Thread(target=worker, args=(n,), daemon=True) for n in range(concurrency)]
    for thread in threads:
        thread.start()
    warm.wait()  # every worker has warmed up
    try:
        before = _stats(client, model)
    finally:
        began[0] = time.perf_counter()
        go.wait()  # the window starts now
        for thread in threads:
            thread.join()
    wall = time.perf_counter() - began[0]
    after = _stats(client, model)
    for client in clients:
        client.close()
    if errors:
        raise ConvSegError(f"{model}: {one_line(errors[0])}")
    return np.asarray([s for own in latencies for s in own]), wall, {k: after[k] - before[k] for k in after}


def _predict(client: Any, protocol: str, model: ServedModel, images: np.ndarray) -> np.ndarray:
    return np.concatenate([infer_frames(client, protocol, model.name, images[sl]) for sl in iter_batches(len(images), model.max_batch)])


def _row(url: str, protocol: str, model: ServedModel, concurrency: int) -> dict[str, Any]:
    row = Row("triton", protocol, model.precision, Path(url) / model.name, 1)
    return {**row_result(row, "ok"), "concurrency": concurrency, "triton_model": model.name,
            "server_queue_ms": None, "server_compute_ms": None, "server_batch": None}


def _measure(url: str, protocol: str, model: ServedModel, dataset: Dataset, concurrency: int, settings: Settings,
             client: Any) -> dict[str, Any]:
    result = _row(url, protocol, model, concurrency)
    assert model.size is not None
    images, _ = dataset.at(model.size)
    seconds, wall, delta = _window(url, protocol, model.name, images, concurrency, settings, client)
    result.update(latency_ms=latency_stats(seconds), iters=int(seconds.size), fps=seconds.size / wall,
                  input_size=list(model.size))
    if delta["queue_count"] > 0:
        result["server_queue_ms"] = delta["queue_ns"] / delta["queue_count"] / 1e6
    if delta["compute_count"] > 0:
        result["server_compute_ms"] = delta["compute_ns"] / delta["compute_count"] / 1e6
    if delta["executions"] > 0:
        result["server_batch"] = delta["inferences"] / delta["executions"]
    return result


def run_triton(url: str, protocol: str, concurrency: list[int], dataset: Dataset, settings: Settings) -> RunOutput:
    """Rows for every model of the server at every concurrency level (see the module docstring)."""
    if not concurrency or any(c < 1 for c in concurrency):
        raise ConvSegError(f"--concurrency must be positive integers, got {concurrency}")
    client = connect(url, protocol)
    try:
        models = served_models(client)
    except Exception as exc:  # noqa: BLE001
        raise ConvSegError(f"Triton at {url} did not list its models: {one_line(exc)}") from None
    if not models:
        raise ConvSegError(f"Triton at {url} serves no model: start it with --model-repository of 'convseg-deploy triton'")
    results: list[dict[str, Any]] = []
    masks: dict[str, PackedMasks] = {}
    for model in models:
        rows = [_row(url, protocol, model, c) for c in concurrency]
        if model.why_not:
            results += [{**r, "status": "skipped", "reason": model.why_not} for r in rows]
            continue
        accuracy = accuracy_of(lambda images, m=model: _predict(client, protocol, m, images), model.size,
                               rows[0]["runner_key"], dataset, masks)
        for c in concurrency:
            try:
                results.append({**_measure(url, protocol, model, dataset, c, settings, client), **accuracy})
            except Exception as exc:  # noqa: BLE001 - one model failing must not stop the others
                failed = _row(url, protocol, model, c)
                results.append({**failed, "status": "failed", "reason": one_line(exc)})
    client.close()
    return RunOutput(results, masks)
