"""Triton Python-backend model: runs the ``model.onnx`` beside it with ONNX Runtime.

``convseg-deploy triton --backend python`` copies this file into each model's version folder
as ``model.py``. It runs inside Triton's Python-backend stub, whose Python needs numpy and
onnxruntime (``onnxruntime-gpu`` for GPU instances); nothing of convseg_deploy. It serves on
servers whose Triton has no ONNX Runtime backend (the ``nvidia-pytriton`` wheel) and on
CPU-only servers. Requests that the dynamic batcher groups arrive in one ``execute`` call and
run as one ONNX Runtime batch.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils  # provided by the stub; not importable elsewhere

ONNX_FILE = "model.onnx"


class TritonPythonModel:
    """Triton's Python-backend model interface: initialize, execute, finalize."""

    def initialize(self, args: dict[str, Any]) -> None:
        import onnxruntime as ort

        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        path = os.path.join(args["model_repository"], args["model_version"], ONNX_FILE)
        options = ort.SessionOptions()
        threads = int(params.get("intra_op_threads", "0"))
        if threads > 0:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        providers = ["CPUExecutionProvider"]
        if args["model_instance_kind"] == "GPU" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, ("CUDAExecutionProvider", {"device_id": int(args["model_instance_device_id"])}))
        self.session = ort.InferenceSession(path, sess_options=options, providers=providers)
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.outputs = [o.name for o in self.session.get_outputs()]

    def execute(self, requests: list[Any]) -> list[Any]:
        try:
            feeds = [{name: pb_utils.get_input_tensor_by_name(r, name).as_numpy() for name in self.inputs}
                     for r in requests]
            sizes = [len(f[self.inputs[0]]) for f in feeds]
            batch = {name: np.concatenate([f[name] for f in feeds]) for name in self.inputs}
            results = self.session.run(self.outputs, batch)
        except Exception as exc:  # noqa: BLE001 - every request gets the error instead of a crashed stub
            error = pb_utils.TritonError(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
            return [pb_utils.InferenceResponse(output_tensors=[], error=error) for _ in requests]
        responses = []
        start = 0
        for request, size in zip(requests, sizes):
            wanted = set(request.requested_output_names()) or set(self.outputs)
            tensors = [pb_utils.Tensor(name, np.ascontiguousarray(out[start:start + size]))
                       for name, out in zip(self.outputs, results) if name in wanted]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            start += size
        return responses

    def finalize(self) -> None:
        self.session = None
