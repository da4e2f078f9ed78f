"""The GPU probe: which GPUs this machine has (whichever library can tell), CUDA, Jetson boards.

Engines are bound to a GPU architecture, a TensorRT build, a CUDA major version, a CPU
architecture and an OS, and TensorRT reports none of them, so building, running, ``doctor``,
``bench`` and ``verify`` all ask here. Jetson boards are detected with their power mode
(``nvpmodel -q``) and whether ``jetson_clocks`` locked the GPU clock, since both move speed.

The CPU's probe is ``convseg_deploy.hardware.cpu``.
"""

from __future__ import annotations

import platform
import re
import shutil
import subprocess
from pathlib import Path
from types import ModuleType
from typing import Any

from convseg_deploy.artifacts.names import TENSORRT_INSTALL_HINT
from convseg_deploy.errors import ConvSegError, MissingDependencyError

_UNKNOWN = object()  # a probe that cannot tell (library or tool missing), as opposed to "no GPU"
_SMI_FIELDS = "index,name,compute_cap,memory.total,driver_version"


def import_tensorrt() -> ModuleType:
    """The ``tensorrt`` module; MissingDependencyError (saying how to get it) when it is not
    installed, ConvSegError when it is installed but does not load (a failure, never a skip)."""
    try:
        import tensorrt
    except ModuleNotFoundError as exc:
        raise MissingDependencyError(
            f"TensorRT is not installed ({exc}): {TENSORRT_INSTALL_HINT} on the machine with the target GPU "
            "(engines must be built on the GPU that runs them)"
        ) from None
    except (ImportError, OSError) as exc:  # the package is there but libnvinfer (or a CUDA library) is not
        raise ConvSegError(f"TensorRT is installed but does not load ({str(exc).splitlines()[0]}): check that its "
                           "libraries match this CUDA ('convseg-deploy doctor')") from None
    return tensorrt


def import_pycuda() -> ModuleType:
    """``pycuda.driver``; MissingDependencyError when not installed, ConvSegError when it does not load."""
    try:
        import pycuda.driver as cuda
    except ModuleNotFoundError as exc:
        raise MissingDependencyError(
            f"pycuda is not installed ({exc}): {TENSORRT_INSTALL_HINT} on the GPU machine (it builds against the CUDA toolkit)"
        ) from None
    except (ImportError, OSError) as exc:  # built against another CUDA, or libcuda missing
        raise ConvSegError(f"pycuda is installed but does not load ({str(exc).splitlines()[0]}): rebuild it against "
                           "this CUDA (pip install --no-cache-dir --force-reinstall pycuda)") from None
    return cuda


def list_gpus() -> list[dict[str, Any]]:
    """Every CUDA device: index, name, compute capability ("8.7"), memory in MiB and driver
    (None where the probe cannot tell). Empty when there is no usable GPU.

    pycuda first (it is what runs engines), then torch, then nvidia-smi, whichever this machine has.
    """
    for probe in (_probe_pycuda, _probe_torch, _probe_nvidia_smi):
        found = probe()
        if found is not _UNKNOWN:
            gpus: list[dict[str, Any]] = found  # type: ignore[assignment]
            driver = _driver_version() if gpus else None
            return [{**g, "driver": g.get("driver") or driver} for g in gpus]
    return []


def cuda_device_info(index: int = 0) -> tuple[str, str] | None:
    """Name and compute capability (e.g. "8.7") of CUDA device ``index``, or None when there is none."""
    for gpu in list_gpus():
        if gpu["index"] == index:
            return str(gpu["name"]), str(gpu["compute_capability"])
    return None


def gpu_expected() -> bool:
    """Whether this machine has an NVIDIA GPU driver installed, whether or not it works.

    Tells "no GPU here" (a backend that needs one is skipped) from "a GPU whose driver or
    libraries fail" (a failure, never a skip).
    """
    markers = ("/proc/driver/nvidia", "/dev/nvidia0", "/dev/nvidiactl", "/etc/nv_tegra_release")
    return shutil.which("nvidia-smi") is not None or any(Path(p).exists() for p in markers)


def cuda_version() -> str | None:
    """The CUDA toolkit version ("12.6") the GPU libraries here run on, or None when unknown."""
    try:
        import pycuda.driver as cuda

        return ".".join(str(p) for p in cuda.get_version()[:2])
    except (ImportError, OSError, AttributeError):
        pass
    try:
        import torch
    except (ImportError, OSError):
        return None
    return str(torch.version.cuda) if torch.version.cuda else None


def host_platform() -> dict[str, str]:
    """CPU architecture and OS, as recorded in engine sidecars (an engine never crosses them)."""
    machine = platform.machine().lower()
    return {"cpu_arch": {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine),
            "os": platform.system().lower()}


def engine_target(trt_version: str, index: int = 0) -> dict[str, Any] | None:
    """Where an engine built or run here is bound: the sidecar fields ``check_engine_compat``
    compares. None when CUDA device ``index`` does not exist."""
    gpu = cuda_device_info(index)
    if gpu is None:
        return None
    return {"tensorrt_version": str(trt_version), "cuda_version": cuda_version() or "unknown", **host_platform(),
            "gpu_name": gpu[0], "compute_capability": gpu[1]}


class PrimaryContext:
    """CUDA device ``index``'s primary context, made current on the calling thread for a ``with`` block.

    The primary context is the one the CUDA runtime (so TensorRT and torch) uses for that device.
    A CUDA context is current per thread, so every call that touches the GPU enters this block on
    its own thread (a server's worker, Triton's Python backend), not once at load time.
    """

    def __init__(self, cuda: Any, index: int) -> None:
        try:
            cuda.init()
            count = cuda.Device.count()
        except Exception as exc:  # noqa: BLE001 - pycuda.driver.Error: no driver, or a broken one
            if gpu_expected():
                raise ConvSegError(f"the CUDA driver failed to initialise ({exc}): check the driver with nvidia-smi") from None
            raise MissingDependencyError(f"no CUDA GPU found ({exc}): TensorRT engines need the GPU they were built for") from None
        if not 0 <= index < count:
            raise ConvSegError(f"CUDA device {index} does not exist: this machine has {count} GPU(s); pass --device 0"
                               + (f" to {count - 1}" if count > 1 else ""))
        self.index = index
        self.device = cuda.Device(index)
        self._context = self.device.retain_primary_context()

    def __enter__(self) -> PrimaryContext:
        self._context.push()
        return self

    def __exit__(self, *exc: object) -> None:
        self._context.pop()

    def release(self) -> None:
        self._context.detach()


def jetson_info(root: Path = Path("/")) -> dict[str, Any] | None:
    """On a Jetson: the board, L4T release, power mode and whether the GPU clock is locked
    (``jetson_clocks`` sets its minimum to its maximum). None elsewhere."""
    release_file, model_file = root / "etc/nv_tegra_release", root / "proc/device-tree/model"
    model = _read(model_file).strip("\x00\n ") if model_file.is_file() else ""
    if not release_file.is_file() and "jetson" not in model.lower():
        return None
    release = _read(release_file).splitlines()[0].strip("# ").strip() if release_file.is_file() else None
    return {"board": model or None, "l4t": release, "power_mode": _nvpmodel_mode(), "clocks_locked": _gpu_clock_locked(root)}


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _nvpmodel_mode() -> str | None:
    exe = shutil.which("nvpmodel")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "-q"], capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"NV Power Mode:\s*(\S+)", out)
    return match.group(1) if match else None


def _gpu_clock_locked(root: Path) -> bool | None:
    for node in sorted((root / "sys/class/devfreq").glob("*")):
        if not any(key in node.name for key in ("gpu", "ga10b", "gv11b", "gp10b")):
            continue
        low, high = _read(node / "min_freq").strip(), _read(node / "max_freq").strip()
        if low and high:
            return low == high
    return None


def _driver_version() -> str | None:
    found = _smi_rows()
    if found and found[0][4]:
        return found[0][4]
    first = _read(Path("/proc/driver/nvidia/version")).splitlines()  # Jetson: no nvidia-smi
    return first[0].strip() if first else None


def _probe_pycuda() -> Any:
    try:
        import pycuda.driver as cuda
    except ImportError:
        return _UNKNOWN
    try:
        cuda.init()
        gpus = []
        for i in range(cuda.Device.count()):
            device = cuda.Device(i)
            major, minor = device.compute_capability()
            gpus.append({"index": i, "name": str(device.name()), "compute_capability": f"{major}.{minor}",
                         "memory_mib": int(device.total_memory()) >> 20})
        return gpus
    except Exception:  # noqa: BLE001 - pycuda.driver.Error without a driver: no usable GPU
        return []


def _probe_torch() -> Any:
    try:
        import torch
    except ImportError:
        return _UNKNOWN
    if not torch.cuda.is_available():
        return _UNKNOWN  # a CPU-only torch build says nothing about the GPU
    gpus = []
    for i in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(i)
        gpus.append({"index": i, "name": str(props.name), "compute_capability": f"{props.major}.{props.minor}",
                     "memory_mib": int(props.total_memory) >> 20})
    return gpus


def _smi_rows() -> list[list[str]] | None:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    cmd = [exe, f"--query-gpu={_SMI_FIELDS}", "--format=csv,noheader,nounits"]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=20, check=True).stdout
        rows = [[p.strip() for p in line.split(",")] for line in out.strip().splitlines()]
    except (OSError, subprocess.SubprocessError):
        return None
    # Names may hold commas: index first, then the last three fields from the right.
    return [[r[0], ",".join(r[1:-3]).strip(), r[-3], r[-2], r[-1]] for r in rows if len(r) >= 5]


def _probe_nvidia_smi() -> Any:
    rows = _smi_rows()
    if rows is None:
        return _UNKNOWN
    try:
        return [{"index": int(i), "name": name, "compute_capability": cap, "memory_mib": int(float(mem)), "driver": drv}
                for i, name, cap, mem, drv in rows]
    except ValueError:
        return _UNKNOWN
