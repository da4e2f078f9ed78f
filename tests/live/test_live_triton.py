"""``live --backend triton`` against the real ``tritonserver`` (nvidia-pytriton wheel, ``make
triton-env``) serving the tiny trained model's frames-in repository with the Python backend."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest
from click.testing import CliRunner

from convseg_deploy.cli import main
from tests.faults.helpers import error_line
from tests.live.conftest import only_summary, read_run
from tests.live.streams import Sender, free_udp_port, udp_url
from tests.triton_serving import serve_or_skip


def cli(*args: object):
    return CliRunner().invoke(main, ["live", *(str(a) for a in args)])


@pytest.fixture(scope="module")
def server(exported: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from convseg_deploy.exporters.triton_repo import write_repository
    from convseg_deploy.exporters.triton_spec import RepoOptions

    root = tmp_path_factory.mktemp("triton-live")
    write_repository(str(exported), root / "repo", RepoOptions(kind="cpu", backends=("python",), threads=1,
                                                               max_batch=4, preferred_batch=(4,)))
    with serve_or_skip([root / "repo"], log_dir=root) as running:
        yield running


def test_masks_from_the_server_equal_the_local_runs(server: Any, exported: Path, clip: Path, tmp_path: Path) -> None:
    served = cli("--backend", "triton", "--triton-url", server.grpc_url, "--model", "convseg_fp32_python", "--source",
                 clip, "--out", tmp_path / "triton", "--no-status")
    assert served.exit_code == 0, served.output
    local = cli("--backend", "onnxruntime", "--model", exported / "model.fp32.onnx", "--source", clip, "--out",
                tmp_path / "local", "--no-status")
    assert local.exit_code == 0, local.output
    summary, records = read_run(tmp_path / "triton")
    _, reference = read_run(tmp_path / "local")
    assert summary["backend"] == "triton" and summary["model_sha256"] is None
    assert summary["model"] == f"grpc://{server.grpc_url}/convseg_fp32_python" and summary["precision"] == "fp32"
    assert summary["frames_in"] == summary["frames_inferred"] == 60  # a file: every frame, each with its own mask
    # the same file, preprocessing inside the served graph instead of ours: the same masks
    assert [r["polyp_area"] for r in records] == pytest.approx([r["polyp_area"] for r in reference], abs=2e-3)
    assert any(r["polyp_area"] for r in records)


def test_a_udp_stream_into_triton(server: Any, clip: Path, tmp_path: Path) -> None:
    port, out = free_udp_port(), tmp_path / "out"
    with Sender(clip, udp_url(port), seconds=60):
        result = cli("--backend", "triton", "--triton-url", server.http_url, "--protocol", "http", "--model",
                     "convseg_int8_cpu_python", "--source", f"udp://127.0.0.1:{port}", "--out", out, "--max-frames", 30,
                     "--record", out / "live.mp4", "--no-status", "--open-timeout", "30")
    assert result.exit_code == 0, result.output
    summary, _ = read_run(out)
    assert summary["ended_by"] == "max_frames" and summary["frames_in"] == 30 and summary["frames_inferred"] >= 1
    assert summary["precision"] == "int8-cpu" and summary["outputs"]["record"]["frames"] == 30


def test_triton_errors_are_one_line(server: Any, clip: Path, tmp_path: Path) -> None:
    from convseg_deploy.benchmarks.triton_local import free_port

    url = f"127.0.0.1:{free_port()}"
    result = cli("--backend", "triton", "--triton-url", url, "--source", clip, "--out", tmp_path / "a", "--no-status")
    assert result.exit_code == 1
    assert error_line(result.output).startswith(f"Error: no Triton server answers grpc at {url}")
    only_summary(tmp_path / "a")
    several = cli("--backend", "triton", "--triton-url", server.grpc_url, "--source", clip, "--out", tmp_path / "b")
    assert several.exit_code == 1
    line = error_line(several.output)
    assert "serves 2 frames-in models (convseg_fp32_python, convseg_int8_cpu_python): name one with --model" in line
    missing = cli("--backend", "triton", "--source", clip, "--out", tmp_path / "c")
    assert missing.exit_code == 1 and "--backend triton needs --triton-url" in error_line(missing.output)
