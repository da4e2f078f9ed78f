"""Talking to a Triton Inference Server that serves frames-in models (``convseg-deploy triton``).

One client module for everything that sends frames to Triton: ``bench --backends triton``
(benchmarks.triton_load) and ``live --backend triton``. A served model takes the frames-in
contract of ``artifacts.names``: UINT8 ``frames`` N x H x W x 3 in, UINT8 ``mask`` N x H x W
(0 or MASK_ON) out. ``tritonclient`` is imported lazily; a missing package is a
MissingDependencyError naming the extra to install.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from convseg_deploy.artifacts.io_variants import FRAMES_INPUT, MASK_ON, MASK_OUTPUT
from convseg_deploy.errors import ConvSegError, MissingDependencyError, one_line

PROTOCOLS = ("grpc", "http")
CONNECT_TIMEOUT_S = 10.0


def client_module(protocol: str) -> Any:
    try:
        if protocol == "grpc":
            import tritonclient.grpc as module
        else:
            import tritonclient.http as module
    except ImportError:
        raise MissingDependencyError(f'tritonclient[{protocol}] is not installed: pip install "convseg-deploy[triton]"') from None
    return module


def make_client(url: str, protocol: str) -> Any:
    """A tritonclient InferenceServerClient (one per thread: the HTTP one is not thread-safe)."""
    if protocol not in PROTOCOLS:
        raise ConvSegError(f"--protocol {protocol!r}: use grpc or http")
    module = client_module(protocol)
    kwargs = {"network_timeout": 60.0, "connection_timeout": CONNECT_TIMEOUT_S} if protocol == "http" else {}
    try:
        return module.InferenceServerClient(url, **kwargs)
    except Exception as exc:  # noqa: BLE001 - a malformed URL raises from the constructor
        raise ConvSegError(f"--triton-url {url!r} is not usable ({one_line(exc)}): give HOST:PORT") from None


def connect(url: str, protocol: str) -> Any:
    """A client of a live server, or a one-line error saying the URL does not answer."""
    client = make_client(url, protocol)
    try:
        live = client.is_server_live(**({"client_timeout": CONNECT_TIMEOUT_S} if protocol == "grpc" else {}))
    except Exception as exc:  # noqa: BLE001 - InferenceServerException, socket and gevent errors
        live, reason = False, one_line(exc)
    else:
        reason = "it answered that it is not live"
    if not live:
        port = "8001 for grpc" if protocol == "grpc" else "8000 for http"
        raise ConvSegError(f"no Triton server answers {protocol} at {url} ({reason}): start tritonserver or fix "
                           f"--triton-url (Triton's default port is {port})")
    return client


@dataclass(frozen=True)
class ServedModel:
    name: str
    precision: str
    size: tuple[int, int] | None  # None: the model does not take frames
    max_batch: int
    why_not: str  # why it cannot be used ("" when it can)


def ask(client: Any, method: str, *args: Any) -> Any:
    """A server query as JSON-like dicts: the gRPC client returns protobufs unless asked, HTTP always JSON."""
    call = getattr(client, method)
    return call(*args, as_json=True) if type(client).__module__.startswith("tritonclient.grpc") else call(*args)


def describe(client: Any, name: str, state: str = "READY", reason: str = "") -> ServedModel:
    """What the server says about model ``name`` (state and reason as its repository index gives them)."""
    from convseg_deploy.artifacts.names import precision_from_triton_model

    precision = precision_from_triton_model(name)
    if state != "READY":
        why = reason.splitlines()[0] if reason else "no reason given"
        return ServedModel(name, precision, None, 0, f"Triton did not load it ({state}): {why}")
    config = ask(client, "get_model_config", name)
    config = config.get("config", config)  # grpc wraps the config, http does not
    inputs = config.get("input", [])
    dims = [int(d) for d in inputs[0].get("dims", [])] if len(inputs) == 1 else []
    if len(inputs) != 1 or inputs[0].get("name") != FRAMES_INPUT or inputs[0].get("data_type") != "TYPE_UINT8" \
            or len(dims) != 3 or dims[2] != 3 or min(dims) < 1:
        return ServedModel(name, precision, None, 0, "it does not take uint8 frames N x H x W x 3 "
                           "(write the repository with 'convseg-deploy triton' from ONNX files)")
    return ServedModel(name, precision, (dims[0], dims[1]), max(1, int(config.get("max_batch_size", 1))), "")


def served_models(client: Any) -> list[ServedModel]:
    index = ask(client, "get_model_repository_index")
    entries = index.get("models", []) if isinstance(index, dict) else index
    return [describe(client, e["name"], e.get("state", ""), e.get("reason", "")) for e in entries]


def infer_frames(client: Any, protocol: str, model: str, frames: np.ndarray) -> np.ndarray:
    """Bool N x H x W masks of uint8 N x H x W x 3 ``frames`` from the served ``model``."""
    module = client_module(protocol)
    tensor = module.InferInput(FRAMES_INPUT, list(frames.shape), "UINT8")
    tensor.set_data_from_numpy(np.ascontiguousarray(frames))
    result = client.infer(model, [tensor], outputs=[module.InferRequestedOutput(MASK_OUTPUT)])
    mask = result.as_numpy(MASK_OUTPUT)
    if mask is None or mask.shape != frames.shape[:3]:
        raise ConvSegError(f"{model} returned a mask of shape {None if mask is None else mask.shape}, "
                           f"expected {frames.shape[:3]}")
    return mask == MASK_ON
