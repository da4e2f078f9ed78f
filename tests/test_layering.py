"""The layering of DESIGN.md: building (exporters) and running (runtime) never import each other,
and nothing that runs models (runtime, deploy, live, benchmarks) imports the exporters; live, which
runs on the device, does not import the benchmarks either, nor does the Holoscan application."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {  # folder -> module prefixes its code must not import
    "exporters": ("convseg_deploy.runtime",),
    "convseg_deploy/runtime": ("exporters",),
    "convseg_deploy/deploy": ("exporters",),
    "convseg_deploy/live": ("exporters", "benchmarks"),
    "convseg_deploy/holoscan": ("exporters", "benchmarks"),
    "convseg_deploy/artifacts": ("exporters", "convseg_deploy.runtime", "convseg_deploy.deploy"),
    "benchmarks": ("exporters",),
}


def imported_modules(path: Path) -> set[str]:
    """Every module named by an import statement anywhere in ``path`` (function-level ones too)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


@pytest.mark.parametrize("folder", sorted(FORBIDDEN))
def test_layers_do_not_import_across(folder: str) -> None:
    files = sorted((ROOT / folder).rglob("*.py"))
    assert files, folder
    crossing = [f"{path.relative_to(ROOT)} imports {name}" for path in files for name in sorted(imported_modules(path))
                if any(name == prefix or name.startswith(prefix + ".") for prefix in FORBIDDEN[folder])]
    assert not crossing, crossing


def test_the_check_sees_function_level_imports(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from convseg_deploy.runtime.onnxruntime_runner import OnnxRuntimeRunner\n")
    assert "convseg_deploy.runtime.onnxruntime_runner" in imported_modules(module)
