"""What each extra costs on disk, measured in an installed environment (not estimated).

    python -m benchmarks.install_sizes [--extras cpu,gpu,train,...] [--markdown]

For every extra of convseg-deploy it walks the requirements (markers evaluated here, extras
followed) through the distributions installed in this environment and adds up their files. The
base install is counted once; each extra's row is what it adds on top of the base. CUDA
libraries (nvidia-* wheels, onnxruntime-gpu, torch's CUDA build, OpenAI's triton) are shown
apart, since that is what a CPU-only machine should not carry. An extra whose closure is not
installed here is reported as "not installed", never guessed.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import sys
from importlib import metadata

from convseg_deploy.hardware.cpu import describe, this_cpu

PROJECT = "convseg-deploy"
CUDA = re.compile(r"^(nvidia-.*|onnxruntime-gpu|torch|triton|tensorrt.*|cupy.*|pycuda)$")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def installed() -> dict[str, metadata.Distribution]:
    return {canonical(d.metadata["Name"]): d for d in metadata.distributions()}


def dist_size(dist: metadata.Distribution) -> int:
    total = 0
    for file in dist.files or ():
        try:
            total += file.locate().stat().st_size
        except OSError:
            pass
    return total


def closure(name: str, extras: tuple[str, ...], dists: dict[str, metadata.Distribution]) -> set[str] | None:
    """Names of the distributions ``name[extras]`` needs (itself included), or None when one of
    them is not installed here."""
    from packaging.markers import default_environment
    from packaging.requirements import Requirement

    env = default_environment()
    names: set[str] = set()
    visited: set[tuple[str, tuple[str, ...]]] = set()
    todo = [(canonical(name), extras)]
    while todo:
        current, wanted = todo.pop()
        if (current, wanted) in visited:
            continue
        visited.add((current, wanted))
        dist = dists.get(current)
        if dist is None:
            return None
        names.add(current)
        for line in dist.requires or ():
            req = Requirement(line)
            if req.marker is None or any(req.marker.evaluate(env | {"extra": e}) for e in ("", *wanted)):
                todo.append((canonical(req.name), tuple(sorted(req.extras))))
    return names


def measure(extras: list[str]) -> dict[str, object]:
    dists = installed()
    sizes = {name: dist_size(d) for name, d in dists.items()}
    base = closure(PROJECT, (), dists)
    if base is None:
        raise SystemExit(f"{PROJECT} is not installed in {sys.prefix}")
    rows = []
    offered = set(dists[canonical(PROJECT)].metadata.get_all("Provides-Extra") or ())
    for extra in extras:
        names = closure(PROJECT, (extra,), dists) if extra in offered else None
        if names is None:
            rows.append({"extra": extra, "installed": False})
            continue
        added = names - base
        cuda = {n for n in added if CUDA.match(n)}
        rows.append({"extra": extra, "installed": True, "added_mb": round(sum(sizes[n] for n in added) / 1e6),
                     "cuda_mb": round(sum(sizes[n] for n in cuda) / 1e6), "largest": sorted(added, key=lambda n: -sizes[n])[:4]})
    return {"python": platform.python_version(), "machine": platform.machine(), "cpu": describe(this_cpu()),
            "base_mb": round(sum(sizes[n] for n in base) / 1e6), "base_largest": sorted(base, key=lambda n: -sizes[n])[:4],
            "extras": rows}


def markdown(result: dict[str, object]) -> str:
    lines = [f"Measured in {sys.prefix} (Python {result['python']}, {result['machine']}; {result['cpu']}) "
             "by `python -m benchmarks.install_sizes --markdown`.", "",
             "| install | adds on disk | of which CUDA libraries | largest parts |", "|---|---:|---:|---|",
             f"| base (`pip install convseg-deploy`) | {result['base_mb']} MB | | {', '.join(result['base_largest'])} |"]
    for row in result["extras"]:  # type: ignore[union-attr]
        if not row["installed"]:
            lines.append(f"| `[{row['extra']}]` | not installed in this environment | | |")
            continue
        lines.append(f"| `[{row['extra']}]` | {row['added_mb']} MB | {row['cuda_mb']} MB | {', '.join(row['largest'])} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--extras", default="cpu,gpu,live,openvino,train,export,triton,tensorrt,dev")
    parser.add_argument("--markdown", action="store_true", help="a table for docs/install.md instead of JSON")
    args = parser.parse_args(argv)
    result = measure([e for e in args.extras.split(",") if e])
    print(markdown(result) if args.markdown else json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
