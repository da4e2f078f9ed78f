"""A frame in, its mask out: on a local runner (any backend of ``predict``) or a Triton server.

Both give a bool mask at the frame's own size, so the pipeline does not care where the model
runs. The local one preprocesses and postprocesses exactly as ``predict`` does (same functions);
the Triton one sends the frame, resized to the served model's size, to a frames-in model
(``convseg-deploy triton``), which preprocesses and thresholds inside its graph, and scales the
returned mask back to the frame (bilinear on 0/255, re-binarised: imaging.resize_mask).
"""

from __future__ import annotations

import abc
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from convseg_deploy.errors import ConvSegError
from convseg_deploy.imaging import preprocess, resize_image, resize_mask
from convseg_deploy.runtime.base import Runner


@dataclass(frozen=True)
class ModelInfo:
    """What the summary says about the model: where it runs and which file (or served model) it is."""

    backend: str
    provider: str
    precision: str
    model: str
    model_sha256: str | None  # None for a model on a Triton server (its file is the server's)
    threshold: float | None


class Segmenter(abc.ABC):
    """A frame's mask in three parts, so that the live pipeline can run each on its own thread and
    keep the model's thread for the model alone: ``prepare`` (the frame to the model's input;
    capture's thread where every frame is inferred), ``infer`` (the model; the inference thread)
    and ``finish`` (the model's output to the frame's bool mask; the finishing thread)."""

    info: ModelInfo

    def prepare(self, rgb: np.ndarray) -> Any:
        """The model's input for one RGB uint8 H x W x 3 frame (the frame itself unless overridden)."""
        return rgb

    @abc.abstractmethod
    def infer(self, prepared: Any) -> Any:
        """The model's output for what ``prepare`` gave."""

    def finish(self, raw: Any, shape: tuple[int, int]) -> np.ndarray:
        """The bool H x W mask, at the frame's ``shape``, from what ``infer`` gave (itself unless overridden)."""
        return raw

    def segment(self, rgb: np.ndarray) -> np.ndarray:
        """All three parts on the calling thread: the bool H x W mask of one frame."""
        return self.finish(self.infer(self.prepare(rgb)), rgb.shape[:2])

    def close(self) -> None:
        """Release the model."""


class RunnerSegmenter(Segmenter):
    """A runner opened by ``deploy.select`` (the caller's; ``close`` deactivates it)."""

    def __init__(self, runner: Runner, info: ModelInfo, threshold: float) -> None:
        self.runner, self.info, self.threshold = runner, info, threshold

    def prepare(self, rgb: np.ndarray) -> np.ndarray:
        return preprocess([rgb], self.runner.preprocess)

    def infer(self, prepared: np.ndarray) -> np.ndarray:
        logits = self.runner.infer(prepared)
        self.runner.synchronize()
        return logits

    def finish(self, raw: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
        from convseg_deploy.deploy.predict import postprocess

        return postprocess(raw[0, 0], shape, self.threshold)[1]

    def close(self) -> None:
        self.runner.deactivate()


class TritonSegmenter(Segmenter):
    """A frames-in model on a Triton server; one client per calling thread (tritonclient's HTTP
    client is not thread-safe)."""

    def __init__(self, url: str, protocol: str, name: str | None) -> None:
        from convseg_deploy.triton import client as triton_client

        self.url, self.protocol = url, protocol
        client = triton_client.connect(url, protocol)
        try:
            served = triton_client.served_models(client)
            self.model = self._pick(served, name)
        finally:
            client.close()
        assert self.model.size is not None
        self.size = self.model.size
        self.info = ModelInfo("triton", protocol, self.model.precision, f"{protocol}://{url}/{self.model.name}", None, None)
        self._local = threading.local()
        self._clients: list[Any] = []

    def _pick(self, served: list[Any], name: str | None) -> Any:
        usable = [m for m in served if not m.why_not]
        if name is not None:
            found = next((m for m in served if m.name == name), None)
            if found is None:
                have = ", ".join(m.name for m in usable) or "none"
                raise ConvSegError(f"Triton at {self.url} serves no model {name!r} (frames-in models there: {have})")
            if found.why_not:
                raise ConvSegError(f"Triton model {name!r} at {self.url} cannot be used: {found.why_not}")
            return found
        if len(usable) != 1:
            have = ", ".join(m.name for m in usable) or "none"
            raise ConvSegError(f"Triton at {self.url} serves {len(usable)} frames-in models ({have}): name one with "
                               "--model NAME")
        return usable[0]

    def prepare(self, rgb: np.ndarray) -> np.ndarray:
        return resize_image(rgb, self.size)[None]

    def infer(self, prepared: np.ndarray) -> np.ndarray:
        from convseg_deploy.triton import client as triton_client

        client = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = triton_client.make_client(self.url, self.protocol)
            self._clients.append(client)
        return triton_client.infer_frames(client, self.protocol, self.model.name, prepared)[0]

    def finish(self, raw: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
        return resize_mask(raw, shape)

    def close(self) -> None:
        for client in self._clients:
            client.close()
        self._clients.clear()
