"""Compose the application's GPU graph with stand-ins for the NVIDIA operators that cannot load
here, and print its flows as JSON: ``python compose_gpu_check.py APP SOURCE OUT``.

Each stand-in is a Python operator with the real operator's documented ports (tests/holoscan/
wheel_api.py reads them from the wheel) that refuses any keyword the real operator does not
document, so composing checks the wiring (Holoscan's add_flow refuses unknown ports) and every
argument compose_gpu passes. Resources (memory pools, CUDA stream pool) are the SDK's own.
Nothing runs: composing only.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

from convseg_deploy.holoscan import application, gpu_graph, sdk
from tests.holoscan.wheel_api import documented

REAL = {"SegmentationPostprocessorOp", "VideoStreamReplayerOp"}  # these load here: the real ones are used


def stand_in(name: str):
    from holoscan.core import IOSpec, Operator

    docs = documented(name)

    class StandIn(Operator):
        def __init__(self, fragment, *args, **kwargs):
            unknown = set(kwargs) - set(docs["params"]) - {"name"}
            if unknown:
                raise SystemExit(f"{name} does not take {sorted(unknown)}")
            super().__init__(fragment, *args, name=kwargs.get("name", name))

        def setup(self, spec):
            for port in docs.get("inputs", []):
                if port == "receivers":
                    spec.input(port, size=IOSpec.ANY_SIZE)
                elif port in ("source_video", "in_tensor"):
                    spec.input(port)
            for port in docs.get("outputs", []):
                spec.output(port)

    StandIn.__name__ = f"StandIn{name}"
    return StandIn


def main() -> None:
    app_dir, source, out = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
    real = sdk.operator
    gpu_graph.operator = lambda name: real(name) if name in REAL else stand_in(name)
    application.operator = gpu_graph.operator
    config = yaml.safe_load((app_dir / "app.yaml").read_text())
    args = argparse.Namespace(source=source, out=out, realtime=True, max_frames=None, headless=True,
                              replayer_basename=None)
    from convseg_deploy.holoscan.operators import RunState
    from convseg_deploy.live.journal import FramesLog

    out.mkdir(parents=True, exist_ok=True)
    frames_log = FramesLog(out)

    class FileLike:  # FrameSourceOp's source for files and URLs: composing never reads it
        live, kind = False, "file"

    app = application.build_app(config, args, RunState(), frames_log, None,
                                None if source.startswith(("replayer:", "/dev/video")) else FileLike(), gpu=True)
    app.compose_graph()
    flows = []
    for node in app.graph.get_nodes():
        for nxt in app.graph.get_next_nodes(node):
            for out_port, in_ports in app.graph.get_port_map(node, nxt).items():
                flows += [[node.name, out_port, nxt.name, port] for port in in_ports]
    frames_log.abort()
    json.dump(sorted(flows), sys.stdout)


if __name__ == "__main__":
    main()
