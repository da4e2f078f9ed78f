"""The Python operators of the application: frames from our sources, masks from our runners.

Each declares its ports in ``setup`` and handles one message in ``compute`` (Holoscan's operator
shape); the application only wires them. Messages are Python objects (CPU data only):
``FrameSourceOp`` (or ``ReplayedFramesOp``, after VideoStreamReplayerOp) emits a ``Captured``
(convseg_deploy.live.sources: the same decoding as ``live``), ``SegmentOp`` emits
``(Captured, mask, latency_ms)`` with the mask from a ``Segmenter`` (the same runner,
preprocessing and postprocessing as ``predict``), and ``MaskWriterOp`` writes the mask PNG and
the frame's line of frames.jsonl. The GPU path uses ``FrameSourceOp`` too, for files and
streams, with ``as_tensor`` (its frames as a Holoscan tensor for FormatConverterOp), and
``DeviceMaskWriterOp`` for SegmentationPostprocessorOp's label tensor.

Newest frame (``realtime``): the source's output port has no condition (it never waits for the
model) and the model's input queue holds one frame and replaces it when a newer one comes
(``IOSpec.QueuePolicy.POP``); with a multi-threaded scheduler the source keeps reading at its
own pace. Every frame (a file without ``--realtime``): default ports, so the source waits until
the model has taken the previous frame.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from convseg_deploy.errors import ConvSegError, one_line
from convseg_deploy.holoscan.config import FRAME_PORT, MASK_PORT, MASKS_FOLDER, REPLAYED_PORT, mask_name
from convseg_deploy.holoscan.sdk import import_holoscan
from convseg_deploy.live.journal import FramesLog
from convseg_deploy.live.records import FrameRecord, Tally
from convseg_deploy.live.segmenters import Segmenter
from convseg_deploy.live.sources import Captured, Source, SourceDropped, captured_now

import_holoscan()
from holoscan.core import ConditionType, IOSpec, Operator  # noqa: E402



@dataclass
class RunState:
    """What the operators share with the application: the counts (each written by one operator,
    as in ``live``), how the run ended, and the first error."""

    tally: Tally = field(default_factory=Tally)
    ended_by: str | None = None
    error: str | None = None
    decode_errors: int = 0

    def end(self, ended_by: str, error: str | None = None) -> None:
        if self.ended_by is None:
            self.ended_by, self.error = ended_by, error


class FrameSourceOp(Operator):
    """Reads one frame of ``source`` per compute and emits it; stops the run at the source's end,
    at ``max_frames``, or when a live source drops (no reconnection inside the application)."""

    def __init__(self, fragment: Any, *args: Any, source: Source, state: RunState, realtime: bool,
                 max_frames: int | None, as_tensor: bool = False, **kwargs: Any) -> None:
        self.source, self.state, self.realtime, self.max_frames = source, state, realtime, max_frames
        self.as_tensor = as_tensor
        self.count = 0
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: Any) -> None:
        port = spec.output(FRAME_PORT)
        if self.realtime:  # never wait for the model: its queue keeps the newest frame
            port.condition(ConditionType.NONE)

    def _stop(self, ended_by: str, error: str | None = None) -> None:
        self.state.end(ended_by, error)
        self.stop_execution()

    def compute(self, op_input: Any, op_output: Any, context: Any) -> None:
        if self.max_frames is not None and self.count >= self.max_frames:
            self._stop("max_frames")
            return
        try:
            frame = self.source.read()
        except SourceDropped as exc:
            self._stop("source_lost", f"{self.source}: {exc}")
            return
        except Exception as exc:  # a failed decode ends the run with its reason, not a traceback
            self._stop("error", one_line(exc))
            return
        if frame is None:
            self._stop("end_of_stream")
            return
        frame.index = self.count
        self.count += 1
        self.state.tally.arrived(frame.arrival)
        if self.as_tensor:
            import holoscan

            op_output.emit({"": holoscan.as_tensor(np.ascontiguousarray(frame.image))}, FRAME_PORT)
        else:
            op_output.emit(frame, FRAME_PORT)


class ReplayedFramesOp(Operator):
    """VideoStreamReplayerOp's frames (a GXF recording: one H x W x 3 or x 4 uint8 host tensor per
    message) as ``Captured`` frames for SegmentOp, on the CPU path; arrival is when it got here."""

    def __init__(self, fragment: Any, *args: Any, state: RunState, realtime: bool, **kwargs: Any) -> None:
        self.state, self.realtime = state, realtime
        self.count = 0
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: Any) -> None:
        spec.input(REPLAYED_PORT)
        port = spec.output(FRAME_PORT)
        if self.realtime:
            port.condition(ConditionType.NONE)

    def compute(self, op_input: Any, op_output: Any, context: Any) -> None:
        message = op_input.receive(REPLAYED_PORT)
        tensor = next(iter(message.values())) if isinstance(message, dict) else message
        image = np.array(tensor, dtype=np.uint8, copy=True)  # the replayer reuses its buffers
        if image.ndim != 3 or image.shape[2] not in (3, 4):
            self.state.end("error", f"the recording's frames are {image.shape}, not H x W x 3 (RGB) or x 4 (RGBA)")
            self.stop_execution()
            return
        frame = captured_now(np.ascontiguousarray(image[:, :, :3]))
        frame.index = self.count
        self.count += 1
        self.state.tally.arrived(frame.arrival)
        op_output.emit(frame, FRAME_PORT)


class SegmentOp(Operator):
    """One frame in, its mask out, on a runner of ``predict``; frames it never sees were replaced
    in its queue by newer ones (counted as skipped at the end: frames_in - frames_inferred)."""

    def __init__(self, fragment: Any, *args: Any, segmenter: Segmenter, state: RunState, realtime: bool,
                 **kwargs: Any) -> None:
        self.segmenter, self.state, self.realtime = segmenter, state, realtime
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: Any) -> None:
        if self.realtime:
            spec.input(FRAME_PORT, policy=IOSpec.QueuePolicy.POP)
        else:
            spec.input(FRAME_PORT)
        spec.output(MASK_PORT)

    def compute(self, op_input: Any, op_output: Any, context: Any) -> None:
        frame: Captured = op_input.receive(FRAME_PORT)
        try:
            mask = self.segmenter.segment(frame.image)
        except Exception as exc:
            self.state.end("error", f"inference failed on frame {frame.index}: {one_line(exc)}")
            self.stop_execution()
            return
        latency_ms = (time.perf_counter() - frame.arrival) * 1000.0
        self.state.tally.inferred(latency_ms)
        op_output.emit((frame, mask, latency_ms), MASK_PORT)


class MaskWriterOp(Operator):
    """masks/<index>.png (0/255, the frame's size, as ``predict`` writes them) and frames.jsonl."""

    def __init__(self, fragment: Any, *args: Any, out: Path, frames_log: FramesLog, state: RunState,
                 **kwargs: Any) -> None:
        self.folder, self.frames_log, self.state = out / MASKS_FOLDER, frames_log, state
        self.folder.mkdir(parents=True, exist_ok=True)
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: Any) -> None:
        spec.input(MASK_PORT)

    def compute(self, op_input: Any, op_output: Any, context: Any) -> None:
        frame, mask, latency_ms = op_input.receive(MASK_PORT)
        write_mask(self.folder, self.frames_log, self.state, frame.index, frame.wall, mask, latency_ms)


def write_mask(folder: Path, frames_log: FramesLog, state: RunState, index: int, wall: float, mask: np.ndarray,
               latency_ms: float | None) -> None:
    """The mask's PNG and its frames.jsonl line; a failed write ends the run with its reason."""
    from convseg_deploy.deploy.render import region_stats, write_png

    try:
        write_png(folder / mask_name(index), mask.astype(np.uint8) * 255)
        stats = region_stats(mask)
        frames_log.write(FrameRecord(index, wall, True, latency_ms, index, 0.0, stats["polyp_area"], stats["bbox"]))
    except ConvSegError as exc:
        state.end("error", str(exc))
        return
    state.tally.shown(time.perf_counter(), 0.0)


class DeviceMaskWriterOp(Operator):
    """The GPU path's writer: SegmentationPostprocessorOp's ``out_tensor`` (uint8 labels, H x W x 1
    at the model's size, on the device) as 0/255 PNGs at that size, and frames.jsonl. The index is
    the writer's count (no frame index travels through NVIDIA's operators)."""

    def __init__(self, fragment: Any, *args: Any, out: Path, frames_log: FramesLog, state: RunState,
                 **kwargs: Any) -> None:
        self.folder, self.frames_log, self.state = out / MASKS_FOLDER, frames_log, state
        self.folder.mkdir(parents=True, exist_ok=True)
        self.count = 0
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: Any) -> None:
        spec.input("in")

    def compute(self, op_input: Any, op_output: Any, context: Any) -> None:
        import cupy

        mask = cupy.asnumpy(cupy.asarray(op_input.receive("in")["out_tensor"]))[..., 0] > 0
        self.state.tally.frames_inferred += 1  # its latency is the Tracker's (no clock of ours on this path)
        write_mask(self.folder, self.frames_log, self.state, self.count, time.time(), mask, None)
        self.count += 1
