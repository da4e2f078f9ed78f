"""Third-party quantizers log every step; the export log stays ours."""

from __future__ import annotations

import contextlib
import logging
from typing import Iterator


@contextlib.contextmanager
def quiet_logger(name: str | None, level: int) -> Iterator[None]:
    """Raise logger ``name`` (None: the root logger) to ``level`` for the block: the quantizers
    log every step, and the export log stays ours."""
    logger = logging.getLogger(name)
    before = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(before)
