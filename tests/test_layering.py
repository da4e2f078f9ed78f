"""The layering of docs/architecture.md: building (exporters) and running (runtime) never import each
other, and nothing that runs models (runtime, deploy, live, benchmarks) imports the exporters; live,
which runs on the device, does not import the benchmarks either, nor does the Holoscan application.
No two modules import each other, directly or around a circle."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# The repository's folders and the packages they install as (setup.cfg's package_dir).
INSTALLED_AS = {"convseg_deploy": "convseg_deploy", "exporters": "convseg_deploy.exporters",
                "benchmarks": "convseg_deploy.benchmarks"}
EXPORTERS, BENCHMARKS = INSTALLED_AS["exporters"], INSTALLED_AS["benchmarks"]
FORBIDDEN = {  # folder -> module prefixes its code must not import
    "exporters": ("convseg_deploy.runtime",),
    "convseg_deploy/runtime": (EXPORTERS,),
    "convseg_deploy/deploy": (EXPORTERS,),
    "convseg_deploy/live": (EXPORTERS, BENCHMARKS),
    "convseg_deploy/holoscan": (EXPORTERS, BENCHMARKS),
    "convseg_deploy/artifacts": (EXPORTERS, "convseg_deploy.runtime", "convseg_deploy.deploy"),
    # the hardware probes are read by every layer and read none of them, but for the runtime's import
    # helpers, through which the peak probe loads the libraries it measures (one way to import each)
    "convseg_deploy/hardware": (EXPORTERS, "convseg_deploy.deploy", BENCHMARKS),
    "benchmarks": (EXPORTERS,),
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


def module_name(path: Path, root: Path) -> str:
    """The name a file imports as: exporters/int8.py -> convseg_deploy.exporters.int8."""
    top, *parts = path.relative_to(root).with_suffix("").parts
    parts = parts[:-1] if parts and parts[-1] == "__init__" else parts
    return ".".join([INSTALLED_AS[top], *parts])


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """module -> the project modules it imports (relative imports resolved). ``from a import b``
    counts as importing ``a.b`` when that is a module, else ``a``."""
    paths = {module_name(p, root): p for top in INSTALLED_AS for p in sorted((root / top).rglob("*.py"))}
    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([node.module] if node.module else []))
                found.update(f"{base}.{alias.name}" if f"{base}.{alias.name}" in paths else base for alias in node.names)
        graph[name] = {m for m in found if m in paths and m != name}
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in sorted(graph[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def test_no_two_modules_import_each_other() -> None:
    graph = import_graph()
    assert len(graph) > 50 and "convseg_deploy.exporters.int8" in graph  # the walk found the project
    assert import_cycles(graph) == []


def test_the_cycle_check_sees_a_circle_through_a_type_checking_import(tmp_path: Path) -> None:
    (tmp_path / "exporters").mkdir()
    (tmp_path / "exporters" / "__init__.py").write_text("")
    (tmp_path / "exporters" / "a.py").write_text("from convseg_deploy.exporters.b import f\n")
    (tmp_path / "exporters" / "b.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .c import g\n")
    (tmp_path / "exporters" / "c.py").write_text("def g():\n    from convseg_deploy.exporters import a\n")
    assert import_cycles(import_graph(tmp_path)) == [[f"{EXPORTERS}.a", f"{EXPORTERS}.b", f"{EXPORTERS}.c"]]
