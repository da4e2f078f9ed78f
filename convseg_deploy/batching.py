"""Slices of a sequence in batches: shared by training, evaluation, export checks and benches."""

from __future__ import annotations

from typing import Iterator


def iter_batches(n: int, batch_size: int) -> Iterator[slice]:
    """slice(0, b), slice(b, 2b), ... covering range(n), the last one shorter."""
    for start in range(0, n, batch_size):
        yield slice(start, min(start + batch_size, n))
