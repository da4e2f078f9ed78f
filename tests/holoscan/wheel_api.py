"""What the installed Holoscan wheel says about its operators: parameter names and ports.

Two sources, both the wheel's own: every operator's Python docstring, compiled into its module's
.so (``Parameters``, ``Named Inputs``/``Named Outputs``), read as bytes so operators whose
libraries cannot load here (InferenceOp: libnvrtc; FormatConverterOp: NPP; HolovizOp: libcuda;
V4L2VideoCaptureOp: libjpeg.so.8) are checked too; and, for the operators that load here
(SegmentationPostprocessorOp, VideoStreamReplayerOp), the parameters their ``OperatorSpec``
registers, from an operator built in an Application. Run as a script (a child process, so the
test process never loads the SDK): prints JSON.
"""

from __future__ import annotations

import json
import re
import sys
from typing import Any

from convseg_deploy.holoscan.sdk import OPERATOR_MODULES, operator_library

_PARAMS = re.compile(rb"Parameters\n----------\nfragment : [^\x00]*")
_PORTS = re.compile(rb"\*\*==Named (Inputs|Outputs)==\*\*[^\x00]*")
CONSTRUCTOR_ONLY = {"fragment", "name"}  # arguments of the Python constructor, not operator parameters


def _sections(text: str) -> dict[str, list[str]]:
    """Port names under each "**==Named X==**" heading of one docstring."""
    found: dict[str, list[str]] = {}
    for part in re.split(r"\*\*==Named (\w+)==\*\*", text)[1:]:
        if part in ("Inputs", "Outputs"):
            current = found.setdefault(part.lower(), [])
        else:
            current.extend(re.findall(r"^    (\w+) : ", part.split("Parameters\n")[0], re.M))
    return found


def documented(name: str) -> dict[str, Any]:
    data = operator_library(name).read_bytes()
    params = _PARAMS.search(data)
    ports = _PORTS.search(data)
    if params is None or ports is None:
        raise SystemExit(f"{name}: no parameter or port docs in {operator_library(name)}")
    names = re.findall(r"^(\w+) : ", params.group().decode(), re.M)
    library_strings = sorted({m.decode() for m in re.findall(rb"\x00([a-z0-9_]{3,40})(?=\x00)", _core_library(name))})
    return {"params": sorted(set(names) - CONSTRUCTOR_ONLY), **_sections(ports.group().decode()),
            "doc": params.group().decode(), "library_strings": library_strings}


def _core_library(name: str) -> bytes:
    """The operator's C++ library (libholoscan_op_<module>.so.*), where its own string constants are."""
    lib = operator_library(name).parents[2] / "lib"
    found = sorted(lib.glob(f"libholoscan_op_{OPERATOR_MODULES[name]}.so.*"))
    return found[-1].read_bytes() if found else b""


def registered() -> dict[str, list[str]]:
    """Spec parameters of the operators that load without a GPU."""
    from convseg_deploy.holoscan.sdk import import_holoscan, operator

    import_holoscan()
    from holoscan.core import Application
    from holoscan.resources import UnboundedAllocator

    app = Application()
    ops = {"SegmentationPostprocessorOp": operator("SegmentationPostprocessorOp")(
               app, name="post", allocator=UnboundedAllocator(app, name="a")),
           "VideoStreamReplayerOp": operator("VideoStreamReplayerOp")(app, name="rep", directory="/", basename="x")}
    out = {}
    for name, op in ops.items():
        text = str(op.spec)  # the spec as YAML: params, inputs, outputs
        params = text.split("\nparams:", 1)[1].split("\ninputs:", 1)[0]
        out[name] = sorted(re.findall(r"^  - name: (\w+)$", params, re.M))
    return out


if __name__ == "__main__":
    json.dump({"documented": {name: documented(name) for name in OPERATOR_MODULES}, "registered": registered()},
              sys.stdout)
