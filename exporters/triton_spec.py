"""What a generated Triton model repository holds: the options it is written with and the models it
serves. Its own module so that the repository writer and the README writer both read it without
importing each other."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from convseg_deploy.errors import ConvSegError

ONNX_BACKENDS = ("onnxruntime", "python")
KINDS = ("cpu", "gpu")
VERSION = "1"
TRT_PRECISION_MODE = {"fp32": "FP32", "fp16": "FP16", "int8": "INT8"}  # int8-cpu (UINT8 activations) is no TensorRT model


@dataclass(frozen=True)
class RepoOptions:
    """name: model-name prefix. kind: instance kind (KIND_GPU or KIND_CPU). backends: how ONNX
    files are served. max_batch: frames per server-side batch. preferred_batch: batch sizes the
    dynamic batcher waits for (up to queue_delay_us). instances: model instances per device.
    trt_accelerator: ONNX Runtime models on GPUs use its TensorRT execution accelerator.
    threads: ONNX Runtime intra-op threads per instance (0: its default)."""

    name: str = "convseg"
    kind: str = "gpu"
    backends: tuple[str, ...] = ("onnxruntime",)
    max_batch: int = 8
    preferred_batch: tuple[int, ...] = (4, 8)
    queue_delay_us: int = 500
    instances: int = 1
    trt_accelerator: bool = True
    threads: int = 0

    def check(self) -> None:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", self.name):
            raise ConvSegError(f"--name {self.name!r}: use letters, digits, '_', '-' or '.' (it names folders)")
        if self.kind not in KINDS:
            raise ConvSegError(f"--kind {self.kind!r}: use gpu or cpu")
        bad = [b for b in self.backends if b not in ONNX_BACKENDS]
        if bad or not self.backends:
            raise ConvSegError(f"--backend {bad[0] if bad else '(none)'!r}: use onnxruntime, python or both (comma list)")
        if self.max_batch < 1 or self.instances < 1 or self.queue_delay_us < 0 or self.threads < 0:
            raise ConvSegError("--max-batch and --instances must be >= 1, --queue-delay-us and --threads >= 0")
        if any(b < 1 or b > self.max_batch for b in self.preferred_batch):
            raise ConvSegError(f"--preferred-batch {list(self.preferred_batch)}: each must be 1..--max-batch ({self.max_batch})")


@dataclass(frozen=True)
class Served:
    """One model of the repository: its folder name, platform and where its file comes from."""

    name: str
    platform: str
    precision: str
    source: Path
    frames: bool
    size: tuple[int, int]
    max_batch: int
