"""The small interface every backend runner implements (after Polygraphy's runners).

A runner is a context manager: ``activate`` loads the model (heavy imports happen here, never
at module import), ``infer`` maps a preprocessed float32 N x 3 x H x W numpy batch to
N x 1 x H x W float32 logits, ``deactivate`` frees what ``activate`` took.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from convseg_deploy.config import PreprocessSpec


@dataclass
class RunnerInfo:
    """What a runner reports about itself once active (for tables and reports)."""

    backend: str  # torch | onnxruntime | tensorrt
    provider: str  # cpu | cuda | tensorrt
    precision: str  # fp32 | fp16 | int8 | int8-cpu
    artifact: str  # the file the runner loaded
    extra: dict[str, Any] = field(default_factory=dict)


class Runner(abc.ABC):
    """Base class; subclasses set ``preprocess``/``threshold`` from their artifact in ``activate``."""

    preprocess: PreprocessSpec
    threshold: float
    info: RunnerInfo

    def __enter__(self) -> "Runner":
        self.activate()
        return self

    def __exit__(self, *exc: object) -> None:
        self.deactivate()

    @abc.abstractmethod
    def activate(self) -> None: ...

    @abc.abstractmethod
    def infer(self, batch: np.ndarray) -> np.ndarray: ...

    def max_batch(self) -> int | None:
        """The most frames one ``infer`` call takes (a static batch, an engine's profile), None if any."""
        return None

    def synchronize(self) -> None:
        """Wait for queued device work; a no-op on the CPU. Timing calls it before every clock read."""

    def deactivate(self) -> None:
        """Release what ``activate`` took; the default has nothing to free."""

    def peak_memory_mb(self) -> float | None:
        """Peak device memory in MiB since the last ``reset_peak_memory``, where the backend exposes it."""
        return None

    def reset_peak_memory(self) -> None:
        """Start a new peak-memory window (each bench row measures its own); a no-op without one."""

    def device_time_ms(self) -> float | None:
        """Device time of the last ``infer`` in ms, from CUDA events (GPU backends), else None."""
        return None
