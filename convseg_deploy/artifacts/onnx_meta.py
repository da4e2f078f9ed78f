"""The ``convseg_deploy`` metadata entry that every ONNX file carries.

A JSON string under ``metadata_props`` key ``convseg_deploy`` with: ``preprocess`` (the
PreprocessSpec as a dict: size, channel_order, scale, mean, std), ``threshold``, ``precision``
(fp32, fp16, int8, int8-cpu), ``model`` (the ModelConfig), ``source_sha256`` (the checkpoint's)
and ``versions`` (torch, onnx, onnxruntime). Any consumer can preprocess from the file alone.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from convseg_deploy.config import PreprocessSpec
from convseg_deploy.errors import ConvSegError

METADATA_KEY = "convseg_deploy"


def set_metadata(model: Any, meta: dict[str, Any]) -> None:
    """Replace the ``convseg_deploy`` entry of an ``onnx.ModelProto`` in place."""
    kept = [p for p in model.metadata_props if p.key != METADATA_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    entry = model.metadata_props.add()
    entry.key = METADATA_KEY
    entry.value = json.dumps(meta, sort_keys=True)


def get_metadata(model: Any, source: str = "model") -> dict[str, Any]:
    """The ``convseg_deploy`` entry of an ``onnx.ModelProto`` as a dict."""
    for prop in model.metadata_props:
        if prop.key == METADATA_KEY:
            try:
                return json.loads(prop.value)
            except json.JSONDecodeError:
                raise ConvSegError(f"{source}: its convseg_deploy metadata is not valid JSON; re-export it") from None
    raise ConvSegError(
        f"{source} has no convseg_deploy metadata (preprocessing spec): export it with "
        "'convseg-deploy export' so that consumers know how to preprocess"
    )


def load_onnx(path: str | Path) -> Any:
    """An ONNX file as ``onnx.ModelProto`` (external weights not loaded), or a one-line error."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise ConvSegError(f"ONNX file {path} not found")
    try:
        return onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf raises several types
        raise ConvSegError(f"{path} is not a readable ONNX model ({type(exc).__name__}): re-export it") from None


def model_opset(model: Any) -> int | None:
    """The default-domain (ai.onnx) opset a model declares: what a runtime must support, which a
    quantizer may have raised above the export's (ModelOpt writes 19 into the int8 file)."""
    return next((int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx")), None)


def read_metadata(path: str | Path) -> dict[str, Any]:
    """Read the metadata of an ONNX file without loading its weights."""
    return get_metadata(load_onnx(path), str(path))


def preprocess_from_metadata(meta: dict[str, Any], source: str = "model") -> tuple[PreprocessSpec, float]:
    """The preprocessing spec and mask threshold recorded in an artifact's metadata."""
    if "preprocess" not in meta:
        raise ConvSegError(f"{source}: metadata has no preprocessing spec; re-export it")
    return PreprocessSpec.from_dict(meta["preprocess"]), float(meta.get("threshold", 0.5))
