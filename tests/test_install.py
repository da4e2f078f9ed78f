"""The install resolves where the models run: Linux aarch64 (Jetson, JetPack 6: Python 3.10) and x86_64.

pip evaluates environment markers against the interpreter that runs it, not against
``--platform``, so the markers of setup.cfg are evaluated here for each target (as pip does on
that machine) and the resulting requirements are resolved by ``pip install --dry-run --report``
for that platform and Python, wheels only (a Jetson must not compile numpy). Nothing is
installed; only package metadata is fetched. Skipped with the reason when the index cannot be reached.
"""

from __future__ import annotations

import configparser
import json
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.tags import compatible_tags, cpython_tags
from packaging.utils import canonicalize_name, parse_wheel_filename

ROOT = Path(__file__).resolve().parents[1]
INDEX = "https://pypi.org/simple/"
# JetPack 6 is Ubuntu 22.04 (glibc 2.35): pip there accepts manylinux_2_17 ... manylinux_2_35 wheels.
GLIBC_MINORS = range(17, 36)

# Distributions that are, or carry, CUDA: NVIDIA's CUDA wheels, ONNX Runtime's CUDA build, TensorRT,
# and PyTorch (PyPI's x86_64 Linux torch is the CUDA build and pulls the nvidia-* wheels).
CUDA_DISTRIBUTIONS = {"onnxruntime-gpu", "torch", "pycuda", "triton"}


def is_cuda(name: str) -> bool:
    return name in CUDA_DISTRIBUTIONS or name.startswith(("nvidia-", "tensorrt", "cupy"))


def target_env(machine: str, python: str = "3.10") -> dict[str, str]:
    env = default_environment()
    env.update(platform_machine=machine, sys_platform="linux", platform_system="Linux", os_name="posix",
               python_version=python, python_full_version=f"{python}.12", implementation_name="cpython",
               platform_python_implementation="CPython")
    return env


def setup_cfg() -> configparser.ConfigParser:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    return cfg


def requirements(extra: str | None, env: dict[str, str]) -> list[Requirement]:
    """setup.cfg's install_requires (plus the extras in ``extra``, a comma list), with markers
    evaluated for ``env``."""
    cfg = setup_cfg()
    lines = cfg["options"]["install_requires"].splitlines()
    for name in (extra or "").split(","):
        if name:
            lines += cfg["options.extras_require"][name].splitlines()
    lines = [line.split("#", 1)[0].strip() for line in lines]
    reqs = [Requirement(line) for line in lines if line]
    return [r for r in reqs if r.marker is None or r.marker.evaluate(env)]


def names(reqs: list[Requirement]) -> set[str]:
    return {canonicalize_name(r.name) for r in reqs}


def test_markers_pick_the_onnxruntime_build_each_platform_has() -> None:
    arm, x86 = target_env("aarch64"), target_env("x86_64")
    assert not {"onnxruntime", "onnxruntime-gpu"} & names(requirements(None, x86))  # the runtime is chosen by an extra
    assert {"onnxruntime"} <= names(requirements("gpu", arm)) and "onnxruntime-gpu" not in names(requirements("gpu", arm))
    assert {"onnxruntime-gpu"} <= names(requirements("gpu", x86)) and "onnxruntime" not in names(requirements("gpu", x86))
    windows = target_env("AMD64") | {"sys_platform": "win32", "platform_system": "Windows", "os_name": "nt"}
    assert "onnxruntime-gpu" in names(requirements("gpu", windows))
    mac = target_env("arm64") | {"sys_platform": "darwin", "platform_system": "Darwin"}
    assert "onnxruntime" in names(requirements("gpu", mac))
    for env in (arm, x86, windows, mac):
        assert names(requirements("cpu", env)) - names(requirements(None, env)) == {"onnxruntime"}
    # JetPack's TensorRT comes from apt: the extra must not pip-install a TensorRT on a Jetson.
    assert names(requirements("tensorrt", arm)) - names(requirements(None, arm)) == {"pycuda"}
    assert {"tensorrt", "pycuda"} <= names(requirements("tensorrt", x86))


def test_holoscan_extra_installs_the_sdk_only_where_its_wheels_exist() -> None:
    # holoscan-cu12 publishes Linux x86_64 and aarch64 wheels only; elsewhere the extra adds nothing.
    for machine in ("x86_64", "aarch64"):
        env = target_env(machine)
        assert names(requirements("holoscan", env)) - names(requirements(None, env)) == {"holoscan-cu12",
                                                                                          "nvidia-cuda-runtime-cu12"}
    mac = target_env("arm64") | {"sys_platform": "darwin", "platform_system": "Darwin"}
    assert names(requirements("holoscan", mac)) == names(requirements(None, mac))


def _index_reachable() -> str | None:
    try:
        with urllib.request.urlopen(INDEX + "pip/", timeout=10):
            return None
    except (urllib.error.URLError, OSError) as exc:
        return f"package index {INDEX} unreachable ({exc})"


def resolve(reqs: list[Requirement], machine: str, tmp_path: Path) -> dict[str, Any]:
    """What pip would install for ``reqs`` on CPython 3.10 / Linux ``machine``: name -> report item."""
    why = _index_reachable()
    if why:
        pytest.skip(why)
    report = tmp_path / "report.json"
    platforms = [arg for minor in GLIBC_MINORS for arg in ("--platform", f"manylinux_2_{minor}_{machine}")]
    cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--only-binary=:all:",
           *platforms, "--platform", f"manylinux2014_{machine}", "--python-version", "3.10",
           "--report", str(report), "--quiet", "--no-input", "--disable-pip-version-check",
           *(f"{r.name}{r.specifier}" for r in reqs)]  # markers already evaluated for the target
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"edge install does not resolve for {machine}/3.10:\n{proc.stderr[-2000:]}"
    resolved = json.loads(report.read_text())["install"]
    return {canonicalize_name(item["metadata"]["name"]): item for item in resolved}


@pytest.mark.parametrize("machine", ["aarch64", "x86_64"])
def test_edge_install_resolves_with_wheels_only(machine: str, tmp_path: Path) -> None:
    reqs = requirements("gpu,live", target_env(machine))
    found = resolve(reqs, machine, tmp_path)
    assert names(reqs) <= set(found), f"not resolved: {names(reqs) - set(found)}"
    ort = "onnxruntime" if machine == "aarch64" else "onnxruntime-gpu"
    assert ort in found
    # The CUDA check of the CPU path below sees CUDA where it is: here, in the GPU path's runtime.
    assert [name for name in found if is_cuda(name)] == ([] if machine == "aarch64" else [ort])
    # What pip on glibc 2.35 accepts (pip itself may pick an older manylinux wheel than those asked for).
    plats = [f"manylinux_2_{minor}_{machine}" for minor in range(35, 4, -1)]
    plats += [f"manylinux{legacy}_{machine}" for legacy in ("2014", "2010", "1")]
    supported = {*cpython_tags((3, 10), platforms=plats), *compatible_tags((3, 10), "cp310", plats)}
    for item in found.values():
        wheel = item["download_info"]["url"].rsplit("/", 1)[1]
        assert parse_wheel_filename(wheel)[3] & supported, f"{wheel} does not install on CPython 3.10 / {machine}"


def test_the_cpu_path_brings_no_cuda_library_onto_an_x86_64_clinic_pc(tmp_path: Path) -> None:
    reqs = requirements("cpu,live,openvino", target_env("x86_64"))
    found = resolve(reqs, "x86_64", tmp_path)
    assert {"onnxruntime", "openvino", "av", "numpy"} <= set(found)
    cuda = sorted(name for name in found if is_cuda(name))
    assert cuda == [], f"the CPU path pulls CUDA onto a CPU-only PC: {cuda}"


def test_every_optional_module_names_an_extra_that_exists() -> None:
    from convseg_deploy.cli import OPTIONAL_MODULES

    extras = set(setup_cfg()["options.extras_require"])
    assert set(OPTIONAL_MODULES.values()) <= extras, set(OPTIONAL_MODULES.values()) - extras


def test_a_missing_runtime_is_one_line_naming_its_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from convseg_deploy.cli import main

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime -> ModuleNotFoundError
    from PIL import Image

    model = tmp_path / "model.fp32.onnx"
    model.write_bytes(b"")
    (tmp_path / "images").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "images" / "frame.png")
    result = CliRunner().invoke(main, ["doctor"])
    assert result.exit_code == 0  # doctor reports a missing runtime rather than failing
    result = CliRunner().invoke(main, ["predict", "--model", str(model), str(tmp_path / "images"), "--out", str(tmp_path / "out"),
                                       "--backend", "onnxruntime"])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    assert 'onnxruntime' in result.output and 'pip install "convseg-deploy[cpu]"' in result.output


def test_the_extra_that_installs_model_optimizer_brings_what_its_torch_side_imports() -> None:
    """slim (modelopt.torch.prune) imports requests and counts FLOPs with torchprofile 0.0.x
    (0.1 moved ``torchprofile.profile.handlers``, which ModelOpt 0.47 patches)."""
    reqs = {canonicalize_name(r.name): r for r in requirements("export", target_env("x86_64"))}
    assert {"nvidia-modelopt", "requests", "torchprofile"} <= set(reqs)
    assert "0.0.4" in reqs["torchprofile"].specifier and "0.1.0" not in reqs["torchprofile"].specifier


def test_every_package_folder_installs_under_convseg_deploy() -> None:
    cfg = setup_cfg()["options"]
    listed = set(cfg["packages"].split())
    mapped = dict(line.replace(" ", "").split("=") for line in cfg["package_dir"].splitlines() if line.strip())
    folders = {}
    for name in listed:
        top = next((pkg for pkg in mapped if name == pkg or name.startswith(pkg + ".")), None)
        folders[name] = ROOT / (name.replace(top, mapped[top], 1) if top else name).replace(".", "/")
    assert all((folder / "__init__.py").is_file() for folder in folders.values()), folders
    found = {p.parent for top in ("convseg_deploy", "exporters", "benchmarks") for p in (ROOT / top).rglob("__init__.py")}
    assert found == set(folders.values()), f"package folders not listed in setup.cfg: {sorted(map(str, found - set(folders.values())))}"
    assert all(name == "convseg_deploy" or name.startswith("convseg_deploy.") for name in listed)
