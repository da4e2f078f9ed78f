"""The real ``tritonserver`` (nvidia-pytriton wheel, ``make triton-env``) for the tests that need one."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Iterator

import pytest

from convseg_deploy.errors import MissingDependencyError


@contextlib.contextmanager
def serve_or_skip(repositories: list[Path], log_dir: Path) -> Iterator[Any]:
    """A server on free loopback ports with every model of ``repositories``; the test is skipped,
    with the reason, where the server cannot run."""
    from convseg_deploy.benchmarks.triton_local import find_install, serve

    try:
        find_install()
    except MissingDependencyError as exc:
        pytest.skip(f"the real tritonserver cannot run here: {exc}")
    with serve(repositories, log_dir=log_dir) as running:
        yield running
