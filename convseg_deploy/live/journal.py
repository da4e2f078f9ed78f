"""Writing a live run's ``frames.jsonl`` and ``summary.json`` so that no half-written file is
ever left under either name.

``summary.json`` is replaced atomically each time (fsutil.write_json). ``frames.jsonl`` grows
under a hidden temporary name in the output folder (``.frames.jsonl.*.tmp``, one ``os.write`` per
line) and is renamed to its final name when the run ends, however it ends. A write that fails
(a full disk, a file size limit) stops the file: it is cut back to its last whole line, the
failure is kept for the summary, and the rest of the run goes on. A run that fails before it
starts removes the temporary file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from convseg_deploy.errors import ConvSegError
from convseg_deploy.fsutil import temp_beside, write_json
from convseg_deploy.live.records import FRAMES_FILE, SUMMARY_FILE, FrameRecord


class FramesLog:
    """frames.jsonl, one whole line per frame, renamed into place by ``close``."""

    name = FRAMES_FILE

    def __init__(self, folder: Path) -> None:
        self.final = folder / FRAMES_FILE
        self.tmp = temp_beside(self.final)
        self.fd: int | None = os.open(self.tmp, os.O_WRONLY | os.O_APPEND)
        self.frames = 0
        self.size = 0  # bytes of whole lines written
        self.error: str | None = None

    def write(self, record: FrameRecord) -> None:
        """Append ``record``; raises ConvSegError once, when the file stops (the caller reports it)."""
        if self.fd is None or self.error is not None:
            return
        data = record.to_line().encode()
        try:
            done = 0
            while done < len(data):
                done += os.write(self.fd, data[done:])
        except OSError as exc:
            self.error = f"cannot write {self.final}: {exc.strerror or exc}"
            try:
                os.ftruncate(self.fd, self.size)  # back to the last whole line
            except OSError:
                pass
            raise ConvSegError(self.error) from None
        self.size += len(data)
        self.frames += 1

    def close(self) -> Path:
        """Rename the file (whole lines only) into place."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        os.replace(self.tmp, self.final)
        return self.final

    def abort(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        self.tmp.unlink(missing_ok=True)

    def report(self) -> dict[str, Any]:
        return {"path": str(self.final), "frames": self.frames, "error": self.error}


def write_summary(folder: Path, summary: dict[str, Any]) -> Path:
    return write_json(folder / SUMMARY_FILE, summary)
