"""Atomic file writing (nothing half-written is ever left under the final name), OS errors as
one-line errors naming the path, and the lock that keeps two runs out of one output folder."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

from convseg_deploy.errors import ConvSegError


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def ensure_dir(path: str | os.PathLike) -> Path:
    """Create ``path`` (and parents) or raise a one-line error saying it cannot be written."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConvSegError(f"cannot create output folder {path}: {exc.strerror or exc}") from None
    if not os.access(path, os.W_OK):
        raise ConvSegError(f"output folder {path} is not writable: choose another --out")
    return path


def temp_beside(final: str | os.PathLike, suffix: str = ".tmp") -> Path:
    """A new hidden file beside ``final`` (``.NAME.XXXX<suffix>``) with the usual mode, for
    writing that ends in ``os.replace`` onto ``final``; the caller removes it if it fails."""
    final = Path(final)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=suffix, dir=final.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; finished files get the usual mode
    return Path(tmp)


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; rename it into place only if the block succeeds."""
    final = Path(final)
    ensure_dir(final.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    tmp_path = Path(tmp)
    try:  # from the first statement on: a SIGINT anywhere after mkstemp still removes the temp file
        os.close(fd)
        os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp makes 0600; finished files get the usual mode
        yield tmp_path
        os.replace(tmp_path, final)
    except OSError as exc:  # disk full, quota, permissions: the temp file goes, the final name stays as it was
        raise ConvSegError(f"cannot write {final}: {exc.strerror or exc}") from None
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def atomic_dir(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder beside ``final``; it replaces ``final`` only if the block succeeds."""
    final = Path(final)
    ensure_dir(final.parent)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    try:
        yield tmp
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except OSError as exc:
        raise ConvSegError(f"cannot write {final}: {exc.strerror or exc}") from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def write_json(path: str | os.PathLike, data: Any) -> Path:
    """Write ``data`` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    return Path(path)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks so engines of any size fit in memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


LOCK_NAME = ".convseg-deploy.lock"


@contextlib.contextmanager
def run_lock(folder: str | os.PathLike) -> Iterator[Path]:
    """Hold ``folder``'s run lock while the block writes into it; a second run fails at once.

    An advisory ``flock`` on a hidden file: the kernel releases it when the holder exits, however
    it ends (even SIGKILL), so a crashed run never leaves the folder locked. The holder removes
    the file when done (and the folder, if it made it and nothing was written); a run that locked
    a file just removed sees the inode change and fails.
    """
    import fcntl

    created = not Path(folder).exists()
    folder = ensure_dir(folder)
    path = folder / LOCK_NAME
    try:
        fh = open(path, "a+")
    except OSError as exc:
        raise ConvSegError(f"cannot create the lock file {path}: {exc.strerror or exc}") from None
    try:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            if os.stat(path).st_ino != os.fstat(fh.fileno()).st_ino:
                raise OSError("the lock file was replaced")
        except OSError:
            fh.seek(0)
            holder = fh.read().strip() or "?"
            raise ConvSegError(f"{folder} is in use by another run (pid {holder}): wait for it to finish or choose "
                               "another folder") from None
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        try:
            yield folder
        finally:
            path.unlink(missing_ok=True)  # while still locked: nobody else holds this inode
            if created and not any(folder.iterdir()):
                with contextlib.suppress(OSError):  # another run may have just written into it
                    folder.rmdir()  # a run that wrote nothing leaves no folder it made
    finally:
        fh.close()


def check_outputs_apart(out: Path, inputs: list[Path]) -> None:
    """No input may lie inside the output folder: a write there could replace it."""
    root = out.resolve()
    for item in inputs:
        if item.resolve() == root or item.resolve().is_relative_to(root):
            raise ConvSegError(f"input {item} lies inside --out {out}: outputs could overwrite it; choose an --out "
                               "outside the inputs")


def claim_out(out: Path, marker: str, overwrite: bool) -> None:
    """Make ``out`` (held under ``run_lock``) ready for a new run whose outputs include ``marker``.

    A folder holding another run's outputs (``marker`` is there) is refused unless ``overwrite``,
    which clears it first; any other non-empty folder is refused always (it is not ours to clear).
    """
    present = [p for p in out.iterdir() if p.name != LOCK_NAME]
    if not present:
        return
    if not (out / marker).exists():
        raise ConvSegError(f"--out {out} is not empty and holds no earlier run: choose an empty or new folder")
    if not overwrite:
        raise ConvSegError(f"--out {out} holds another run's outputs: pass --overwrite to replace them, or choose "
                           "another folder")
    try:
        for p in present:
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
    except OSError as exc:
        raise ConvSegError(f"cannot clear {out} for --overwrite: {exc.strerror or exc}") from None
