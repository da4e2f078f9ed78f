"""One measurement a bench run makes: its own module, read by the planner and by every row builder
(OpenVINO's, Triton's) without those importing one another."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Row:
    """One measurement to make. ``artifact`` is None for a placeholder row of a backend that
    was asked for but has nothing to run (it is reported as skipped with ``note``)."""

    backend: str
    provider: str
    precision: str
    artifact: Path | None
    batch_size: int
    note: str = ""
    options: tuple[tuple[str, str], ...] = ()  # runner options (OpenVINO: device, hint, inference_precision)

    @property
    def runner_key(self) -> str:
        """Rows with the same key share one loaded runner (they differ only in batch size)."""
        return f"{self.backend}/{self.provider}/{self.precision}:{self.artifact}" + "".join(f";{k}={v}" for k, v in self.options)

    @property
    def label(self) -> str:
        name = self.artifact.name if self.artifact else "-"
        return f"{self.backend}/{self.provider}/{self.precision} {name}"
