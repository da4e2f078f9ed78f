"""The real ``tritonserver`` (nvidia-pytriton wheel, ``make triton-env``) serving generated repositories.

One server for the module, on free loopback ports, with three repositories: a CPU one (Python
backend and ONNX Runtime models), a GPU one (ONNX Runtime with the TensorRT accelerator and a
``tensorrt_plan`` engine) and a control with a deliberately broken config.pbtxt. The binary has
the Python backend only, so the Python-backend models must serve (checked against ONNX Runtime
run directly) and the others must get past config parsing and stop at the missing backend.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
from click.testing import CliRunner

from convseg_deploy.cli import main
from tests.benchmarks.conftest import fake_engine
from tests.triton_serving import serve_or_skip

BROKEN_EXECUTE = '''
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        return [pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError("CUDA out of memory (test)"))
                for _ in requests]
'''


@pytest.fixture(scope="module")
def server(exported: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from convseg_deploy.exporters.triton_repo import write_repository
    from convseg_deploy.exporters.triton_spec import RepoOptions

    root = tmp_path_factory.mktemp("triton")
    write_repository(str(exported), root / "cpu", RepoOptions(kind="cpu", backends=("python", "onnxruntime"), threads=1,
                                                              max_batch=4, preferred_batch=(4,)))
    gpu_artifacts = root / "gpu-artifacts"
    gpu_artifacts.mkdir()
    shutil.copy(exported / "model.fp32.onnx", gpu_artifacts)
    fake_engine(gpu_artifacts, "fp16")
    write_repository(str(gpu_artifacts), root / "gpu", RepoOptions(name="gpu", kind="gpu"))
    control = root / "control"
    shutil.copytree(root / "cpu" / "convseg_fp32_python", control / "broken_fp32_python")
    (control / "broken_fp32_python" / "1" / "model.py").write_text(BROKEN_EXECUTE)
    text = (control / "broken_fp32_python" / "config.pbtxt").read_text().replace("convseg_fp32_python", "broken_fp32_python")
    (control / "broken_fp32_python" / "config.pbtxt").write_text(text)
    (control / "unparsable").mkdir()
    (control / "unparsable" / "config.pbtxt").write_text(text.replace("broken_fp32_python", "unparsable")
                                                         .replace("TYPE_UINT8", "TYPE_BOGUS"))
    with serve_or_skip([root / "cpu", root / "gpu", control], log_dir=root) as running:
        yield running


def _index(server: Any) -> dict[str, tuple[str, str]]:
    import tritonclient.http as http

    client = http.InferenceServerClient(server.http_url)
    try:
        return {m["name"]: (m.get("state", ""), m.get("reason", "")) for m in client.get_model_repository_index()}
    finally:
        client.close()


def test_python_backend_models_serve_and_others_stop_only_at_the_missing_backend(server: Any) -> None:
    index = _index(server)
    for name in ("convseg_fp32_python", "convseg_int8_cpu_python", "broken_fp32_python"):
        assert index[name][0] == "READY", (name, index[name], server.log_tail())
    for name, backend in (("convseg_fp32_onnxruntime", "onnxruntime"), ("convseg_int8_cpu_onnxruntime", "onnxruntime"),
                          ("gpu_fp32_onnxruntime", "onnxruntime"), ("gpu_fp16_tensorrt", "tensorrt")):
        state, reason = index[name]
        assert state == "UNAVAILABLE" and f"unable to find backend library for backend '{backend}'" in reason, (name, reason)
    log = server.log.read_text(errors="replace")
    # The control shows what a config Triton cannot parse looks like; none of ours does that.
    assert "failed to read text proto from" in log and "unparsable/config.pbtxt" in log
    assert index.get("unparsable", ("", ""))[0] != "READY"
    assert log.count("failed to read text proto from") == 1


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_masks_from_the_server_equal_onnx_runtime_run_directly(server: Any, exported: Path, synth_data: Path,
                                                               protocol: str) -> None:
    from convseg_deploy.triton.client import infer_frames, make_client
    from convseg_deploy.data import find_samples, load_samples
    from convseg_deploy.imaging import logits_to_masks, preprocess
    from convseg_deploy.metrics import mean_dice
    from convseg_deploy.runtime.onnxruntime_runner import OnnxRuntimeRunner

    frames, _ = load_samples(find_samples(synth_data)[:6], (64, 64))
    client = make_client(server.grpc_url if protocol == "grpc" else server.http_url, protocol)
    try:
        for precision in ("fp32", "int8-cpu"):
            served = np.concatenate([infer_frames(client, protocol, f"convseg_{precision.replace('-', '_')}_python", frames[i:i + 3])
                                     for i in (0, 3)])
            with OnnxRuntimeRunner(exported / f"model.{precision}.onnx") as runner:
                direct = logits_to_masks(runner.infer(preprocess(frames, runner.preprocess)), runner.threshold)
            assert served.shape == direct.shape == (6, 64, 64)
            assert mean_dice(served, direct) >= 0.999, precision
            assert served.any()  # a model that returns nothing would agree with nothing
    finally:
        client.close()


def _bench(args: list[str], out: Path) -> tuple[Any, dict[str, Any]]:
    result = CliRunner().invoke(main, ["bench", "--no-progress", "--out", str(out), *args])
    report = json.loads((out / "report.json").read_text()) if (out / "report.json").exists() else {}
    return result, report


def test_bench_triton_rows_join_the_report_with_dice_of_onnx_runtime(server: Any, exported: Path, synth_data: Path,
                                                                     tmp_path: Path) -> None:
    result, report = _bench(["--artifacts", str(exported / "model.fp32.onnx"), "--data", str(synth_data),
                             "--max-images", "8", "--backends", "onnxruntime,triton", "--providers", "cpu",
                             "--batch-sizes", "1", "--iters", "4", "--warmup", "1", "--triton-url", server.grpc_url,
                             "--concurrency", "1,3"], tmp_path / "grpc")
    rows = report["results"]
    ort = next(r for r in rows if r["backend"] == "onnxruntime")
    served = {(r["triton_model"], r["concurrency"]): r for r in rows if r["backend"] == "triton"}
    broken = served[("broken_fp32_python", 1)]
    assert broken["status"] == "failed" and "CUDA out of memory (test)" in broken["reason"]
    assert result.exit_code == 1 and "no-failed-rows" in result.output  # a server answering errors fails the bench
    assert served[("convseg_fp32_onnxruntime", 1)]["status"] == "skipped"
    assert "unable to find backend library" in served[("convseg_fp32_onnxruntime", 1)]["reason"]
    for concurrency in (1, 3):
        row = served[("convseg_fp32_python", concurrency)]
        assert row["status"] == "ok" and row["precision"] == "fp32" and row["batch_size"] == 1
        assert row["iters"] == 4 * concurrency and row["fps"] > 0
        stats = row["latency_ms"]  # p99 only from 100 samples: below that the max is reported instead
        assert 0 < stats["p50"] <= stats["p90"] <= stats["max"] and stats["p99"] is None
        assert row["server_compute_ms"] > 0 and row["server_queue_ms"] >= 0 and row["server_batch"] >= 1
        assert abs(row["dice"] - ort["dice"]) <= 1e-3 and row["agreement"] >= 0.999
    int8 = served[("convseg_int8_cpu_python", 1)]
    assert int8["status"] == "ok" and int8["precision"] == "int8-cpu" and int8["agreement"] is not None
    csv_head = (tmp_path / "grpc" / "report.csv").read_text().splitlines()[0]
    assert "concurrency" in csv_head and "server_compute_ms" in csv_head
    assert "(c3)" in (tmp_path / "grpc" / "report.md").read_text()


def test_bench_over_http(server: Any, synth_data: Path, tmp_path: Path) -> None:
    result, report = _bench(["--data", str(synth_data), "--max-images", "4", "--backends", "triton", "--iters", "3",
                             "--triton-url", server.http_url, "--protocol", "http", "--concurrency", "2"], tmp_path)
    row = next(r for r in report["results"] if r.get("triton_model") == "convseg_fp32_python")
    assert row["status"] == "ok" and row["iters"] == 6 and row["dice"] is not None
    assert result.exit_code == 1  # the broken control model's rows failed


def test_unreachable_url_is_one_line_error(synth_data: Path) -> None:
    from convseg_deploy.benchmarks.triton_local import free_port

    url = f"127.0.0.1:{free_port()}"
    result = CliRunner().invoke(main, ["bench", "--data", str(synth_data), "--backends", "triton", "--triton-url", url,
                                       "--no-progress"])
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: no Triton server answers grpc at {url}")
    assert len(result.output.strip().splitlines()) == 1
    missing = CliRunner().invoke(main, ["bench", "--data", str(synth_data), "--backends", "triton"])
    assert missing.exit_code == 2 and "--triton-url" in missing.output
