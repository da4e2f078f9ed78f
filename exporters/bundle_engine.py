"""``build-engine --bundle``: build an engine on the device from one of a bundle's ONNX files, into the bundle.

Engines are not portable, so they are built where they run, from the ONNX file the bundle
already holds and checks. The engine and its sidecar are built into a hidden staging folder
inside the bundle and moved into place only when complete; the manifest follows, so at no
moment does it list a file that is missing or half-written:

1. a rebuild first drops the old engine's entry from the manifest (the bundle stays valid
   without it), then the new files replace the old ones;
2. the new entry joins the manifest, which is written last (with USAGE.txt).

An interruption between the two leaves an engine the manifest does not list: ``verify`` reports
it, ``predict`` ignores it, and running the same command again finishes the job. The bundle is
locked for the build, so two builds into it cannot interleave.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

from convseg_deploy.artifacts.bundle_manifest import (
    bundle_onnx,
    engine_entry,
    list_key,
    read_bundle,
    with_entry,
    without_file,
    write_bundle_files,
)
from convseg_deploy.artifacts.io_variants import IO_TENSOR, variant
from convseg_deploy.artifacts.manifest import MODEL_LISTS, file_problem
from convseg_deploy.artifacts.sidecar import sidecar_path
from convseg_deploy.errors import ConvSegError
from convseg_deploy.fsutil import run_lock


def _have(manifest: dict[str, Any], io: str) -> str:
    onnx = [e for e in manifest.get(list_key(io), []) if isinstance(e, dict) and e.get("kind", "onnx") == "onnx"
            and str(e.get("io", IO_TENSOR)) == io]
    return ", ".join(sorted(str(e.get("precision")) for e in onnx)) or "none"


def build_into_bundle(bundle: str | os.PathLike, precision: str, io: str = IO_TENSOR,
                      log: Callable[[str], None] = print, **options: Any) -> dict[str, Any]:
    """Build the engine of the bundle's ``precision`` ONNX file of I/O variant ``io`` (``options``
    as for ``tensorrt_builder.build_engine``), add it to the bundle and return its manifest entry."""
    from convseg_deploy.exporters.tensorrt_builder import build_engine

    bundle = Path(bundle)
    if not bundle.is_dir():
        raise ConvSegError(f"bundle folder {bundle} not found")
    variant(io)  # an unknown --io is a one-line error before the bundle is touched
    if precision == "int8-cpu":
        raise ConvSegError("int8-cpu is ONNX Runtime's CPU quantization (UINT8 activations), which TensorRT does not "
                           "take: build --precision int8 (or fp16, fp32)")
    with run_lock(bundle):
        manifest = read_bundle(bundle)
        source = bundle_onnx(manifest, precision, io)
        if source is None:
            hint = "" if io == IO_TENSOR else f" (re-export with --io ...,{io} and re-create the bundle)"
            raise ConvSegError(f"{bundle} has no {precision} ONNX file with {io} I/O to build from (it has {_have(manifest, io)})"
                               f"{hint}")
        problem = file_problem(bundle, source)
        if problem:
            raise ConvSegError(f"{bundle}/{problem}: run 'convseg-deploy verify {bundle}' and re-copy the bundle")
        engine = Path(source["file"]).with_suffix(".engine").name
        stage = Path(tempfile.mkdtemp(prefix=".build-engine-", dir=bundle))
        try:
            log(f"building {engine} from {source['file']} on this device")
            sidecar = build_engine(bundle / source["file"], stage / engine, **options)
            side = sidecar_path(engine).name
            if any(e.get("file") == engine for key in MODEL_LISTS for e in manifest.get(key, []) if isinstance(e, dict)):
                manifest = without_file(manifest, engine)
                write_bundle_files(bundle, bundle.name, manifest)
            os.replace(stage / engine, bundle / engine)
            os.replace(stage / side, bundle / side)
            entry = engine_entry(bundle, engine, side, sidecar, source)
            write_bundle_files(bundle, bundle.name, with_entry(manifest, entry))
        except OSError as exc:
            raise ConvSegError(f"cannot write the engine into {bundle}: {exc.strerror or exc}") from None
        finally:
            shutil.rmtree(stage, ignore_errors=True)
    return entry
