"""Run the real ``tritonserver`` of the ``nvidia-pytriton`` wheel on loopback, for tests and CPU trials.

The wheel carries Triton's server binary with the Python backend only (no ONNX Runtime or
TensorRT backend). Its Python dependencies pin numpy below 2 and its Python-backend stub was
built against numpy 1.x, so the server runs from an environment of its own (``make
triton-env``: the wheel without its client-side dependencies, numpy<2 and onnxruntime) and the
project's numpy is left alone. The stub's Python finds that environment's packages through
PYTHONPATH; the backend folder is assembled in a temporary folder with the stub built for that
environment's Python version, as pytriton itself does.

    python -m benchmarks.triton_local REPO [--http-port 8000 --grpc-port 8001]
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from convseg_deploy.errors import ConvSegError, MissingDependencyError

ENV_VARIABLE = "CONVSEG_TRITON_ENV"
DEFAULT_ENV = Path(__file__).resolve().parent.parent / ".venv-triton"
STARTUP_SECONDS = 120.0  # loading Python-backend models starts one stub process each
STOP_SECONDS = 30.0


@dataclass(frozen=True)
class TritonInstall:
    """The server binary, Python backend and stub of one server environment (a venv)."""

    binary: Path
    python_backend: Path
    stub: Path
    env: Path


def find_install(env: str | Path | None = None) -> TritonInstall:
    """The tritonserver of ``env`` [$CONVSEG_TRITON_ENV or .venv-triton], or MissingDependencyError."""
    root = Path(env or os.environ.get(ENV_VARIABLE) or DEFAULT_ENV)
    found = sorted(root.glob("lib/python3.*/site-packages/pytriton/tritonserver"))
    if not found:
        raise MissingDependencyError(f"no tritonserver in {root}: run 'make triton-env' (or set {ENV_VARIABLE} to an "
                                     "environment with nvidia-pytriton --no-deps, numpy<2 and onnxruntime)")
    server = found[-1]
    version = server.parents[2].name.removeprefix("python")  # lib/python3.11/site-packages/pytriton/tritonserver
    stub = server / "python_backend_stubs" / version / "triton_python_backend_stub"
    install = TritonInstall(server / "bin" / "tritonserver", server / "backends" / "python", stub, root)
    missing = [p for p in (install.binary, install.python_backend / "libtriton_python.so", install.stub) if not p.exists()]
    if missing:
        raise MissingDependencyError(f"the nvidia-pytriton install in {root} lacks {missing[0]}: reinstall it (make triton-env)")
    for binary in (install.binary, install.stub):
        _check_libraries(binary)
    return install


def _check_libraries(binary: Path) -> None:
    """MissingDependencyError naming the first shared library ``binary`` cannot find (the stub
    needs the libpython3.X.so of its Python version, which some Python builds lack)."""
    try:
        listing = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return  # no ldd: the start itself will tell
    absent = [line.split("=>")[0].strip() for line in listing.splitlines() if "not found" in line]
    if absent:
        raise MissingDependencyError(f"{binary.name} cannot run here: shared library {absent[0]} not found "
                                     "(for the stub: install the libpython3.X shared library of the triton-env Python)")


def free_port() -> int:
    """A loopback TCP port that was free a moment ago (the server binds it next)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _backend_folder(install: TritonInstall, folder: Path) -> Path:
    python = folder / "python"
    python.mkdir(parents=True)
    for item in (install.python_backend / "libtriton_python.so", install.python_backend / "triton_python_backend_utils.py",
                 install.stub):
        (python / item.name).symlink_to(item)
    return folder


@dataclass
class LocalServer:
    """A running server: its process, URLs and log file."""

    process: subprocess.Popen[bytes]
    http_port: int
    grpc_port: int
    log: Path

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


@contextlib.contextmanager
def serve(repositories: str | Path | list[str | Path], *, env: str | Path | None = None, http_port: int | None = None,
          grpc_port: int | None = None, log_dir: str | Path | None = None) -> Iterator[LocalServer]:
    """Start tritonserver on 127.0.0.1 with every model of ``repositories``; stop it on exit.

    Models that fail to load (an ONNX Runtime or TensorRT model on this binary) stay
    UNAVAILABLE with Triton's reason in the repository index; the server still serves the others.
    """
    install = find_install(env)
    with tempfile.TemporaryDirectory(prefix="triton-") as tmp:
        log = Path(log_dir or tmp) / "tritonserver.log"
        ports = (http_port or free_port(), grpc_port or free_port(), free_port())
        repos = repositories if isinstance(repositories, list) else [repositories]
        command = [str(install.binary), *(f"--model-repository={Path(r).resolve()}" for r in repos),
                   f"--backend-directory={_backend_folder(install, Path(tmp) / 'backends')}",
                   "--http-address=127.0.0.1", f"--http-port={ports[0]}", "--grpc-address=127.0.0.1",
                   f"--grpc-port={ports[1]}", "--metrics-address=127.0.0.1", f"--metrics-port={ports[2]}",
                   "--allow-gpu-metrics=false", "--exit-on-error=false", "--strict-readiness=false", "--log-verbose=0"]
        # The stub's embedded Python ignores PYTHONPATH; it takes its prefix (and so the
        # environment's site-packages) from the first python3 on PATH, as pytriton arranges it.
        environment = {**os.environ, "PATH": f"{install.env / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
                       "PYTHONNOUSERSITE": "1"}
        environment.pop("PYTHONPATH", None)  # the project's modules are no business of the server's Python
        with open(log, "wb") as out:
            process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=environment)
        server = LocalServer(process, ports[0], ports[1], log)
        try:
            deadline = time.monotonic() + STARTUP_SECONDS
            while not _ready(ports[0]):
                if process.poll() is not None:
                    raise ConvSegError(f"tritonserver exited with code {process.returncode} while starting: "
                                       f"{server.log_tail(1) or 'no output'}")
                if time.monotonic() > deadline:
                    raise ConvSegError(f"tritonserver was not ready after {STARTUP_SECONDS:.0f} s: {server.log_tail(1)}")
                time.sleep(0.25)
            yield server
        finally:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(STOP_SECONDS)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("repository")
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--grpc-port", type=int, default=8001)
    args = parser.parse_args(argv)
    try:
        with serve(args.repository, http_port=args.http_port, grpc_port=args.grpc_port, log_dir=".") as server:
            print(f"serving {args.repository}: HTTP {server.http_url}, gRPC {server.grpc_url}; log ./tritonserver.log; "
                  "Ctrl-C stops", flush=True)
            server.process.wait()
    except ConvSegError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
