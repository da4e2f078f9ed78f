"""The four live stages, each run by one thread: Capture, Inference, Finish and Output.

Each knows only its inputs and outputs (the source, the hand-overs of ``handover``, the queue to
the output stage, the sinks), never another stage's internals; ``pipeline.Pipeline`` wires them,
starts them and stops them. ``Control`` is what they share: the stop signal and how the run ended
(the first reason given wins).
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from convseg_deploy.errors import ConvSegError, one_line
from convseg_deploy.live.handover import Job, Mailbox, MaskBoard, MaskResult
from convseg_deploy.live.journal import FramesLog
from convseg_deploy.live.records import FrameRecord, Tally
from convseg_deploy.live.segmenters import Segmenter
from convseg_deploy.live.outputs import Display, Sink
from convseg_deploy.live.sources import Captured, Source, SourceDropped

END = None  # the last item of the output queue and of the finishing queue
STOP_PATIENCE_S = 5.0  # how long a file's last frame waits for room in the output queue once the run stops
BACKOFF_S = (0.25, 0.5, 1.0, 2.0)  # waits between reconnection attempts (the last one repeats)


class Control:
    """The end of the run, shared by the stages and the pipeline: ``stop`` (capture reads no more
    frames) is set by every end; ``abort`` (do not wait for the model any more) by an interrupt or
    an error only, so a file that ends still gets every frame's own mask."""

    ABORTING = ("interrupt", "error")

    def __init__(self, log: Callable[[str], None]) -> None:
        self.stop = threading.Event()
        self.abort = threading.Event()
        self.ended_by: str | None = None
        self.error: str | None = None
        self.log = log
        self.state = "starting"  # for the status line: running | reconnecting | stopping
        self._lock = threading.Lock()

    def end(self, reason: str, error: str | None = None) -> None:
        with self._lock:
            if self.ended_by is None:
                self.ended_by, self.error = reason, error
        if reason in self.ABORTING:
            self.abort.set()
        self.stop.set()


@dataclass(frozen=True)
class Limits:
    """When capture stops by itself: after ``max_frames`` frames or ``duration`` s (None: never);
    how long a dropped source is retried, and how long each attempt may take."""

    max_frames: int | None
    duration: float | None
    reconnect_timeout: float
    open_timeout: float


class Capture:
    """Reads the source continuously and hands every frame to the output queue and the newest
    to the mailbox; ends the run at the end of the source, a limit, or a source that stays lost.
    With ``prepare`` (every-frame mode: each frame is inferred) it also makes each frame's model
    input here, so that the model's thread does nothing but run the model."""

    def __init__(self, source: Source, mailbox: Mailbox, out: queue.Queue, tally: Tally, limits: Limits,
                 control: Control, every_frame: bool, prepare: Callable[[np.ndarray], object] | None = None) -> None:
        self.source, self.mailbox, self.out, self.tally = source, mailbox, out, tally
        self.limits, self.control, self.every_frame, self.prepare = limits, control, every_frame, prepare
        self.reconnects = 0
        self.dropped_for_output = 0  # live frames the output stage could not keep up with
        self.started = time.perf_counter()
        self.cpu_s = 0.0  # this thread's CPU time (decoding and conversion included), set when it ends

    def run(self) -> None:
        control, index = self.control, 0
        cpu = time.thread_time()
        try:
            self.started = time.perf_counter()
            control.state = "running"
            while not control.stop.is_set():
                if self._out_of_time():
                    control.end("duration")
                    break
                try:
                    frame = self.source.read()
                except SourceDropped as exc:
                    if not self.source.retry:
                        control.end("source_lost", f"source {self.source} lost: {exc}")
                        break
                    if not self._reconnect(str(exc)):
                        break
                    continue
                if frame is None:
                    control.end("end_of_stream")
                    break
                if self._out_of_time():  # the frame came after the end: not part of the run
                    control.end("duration")
                    break
                if control.stop.is_set():  # stopped (Ctrl-C) while this frame was read: not part of the run
                    break
                frame.index = index
                self.tally.arrived(frame.arrival)
                self._to_output(frame)
                job = Job(frame, self._prepared(frame))
                if not self.mailbox.put(job, control.stop):
                    self.tally.skipped(1)  # stopped while waiting to hand it over
                index += 1
                if self.limits.max_frames is not None and index >= self.limits.max_frames:
                    control.end("max_frames")
                    break
        except ConvSegError as exc:
            control.end("error", str(exc))
        except Exception as exc:  # noqa: BLE001 - any failure ends the run with its message, never silently
            control.end("error", f"capture failed: {one_line(exc)}")
        finally:
            # newest-frame mode: a frame still waiting when capture ends was shown already, and its
            # mask would be drawn on nothing; inferring it would only add a latency of a whole
            # model's time to the run's tail (it waited for the model with no newer frame to
            # replace it: the last frame of every 60 s run of the full model, 2026-12-02, Zen 3)
            self.mailbox.close(discard=control.abort.is_set() or not self.every_frame)
            self.out.put(END)  # the output stage takes frames until END, whatever happens to it: room comes
            self.source.close()
            self.cpu_s = time.thread_time() - cpu

    def _prepared(self, frame: Captured) -> object:
        if self.prepare is None:
            return None
        try:
            return self.prepare(frame.image)
        except Exception as exc:
            self.tally.skipped(1)  # arrived and shown, never inferred: the counts still add up
            if isinstance(exc, ConvSegError):
                raise
            raise ConvSegError(f"preprocessing frame {frame.index} failed: {one_line(exc)}") from exc

    def _out_of_time(self) -> bool:
        duration = self.limits.duration
        return duration is not None and time.perf_counter() - self.started >= duration

    def _to_output(self, frame: Captured) -> None:
        """Queue ``frame`` for the output stage (a bounded queue). A live frame that finds it full
        is not shown: the outputs cannot keep up with the source, and the reader never waits for
        them. A file's frame waits for room (once the run stops, for STOP_PATIENCE_S at most)."""
        if not self.every_frame:
            try:
                self.out.put_nowait(frame)
            except queue.Full:
                self.dropped_for_output += 1
            return
        patience = None
        while True:
            try:
                self.out.put(frame, timeout=0.1)
                return
            except queue.Full:
                if self.control.stop.is_set():
                    patience = patience or time.monotonic() + STOP_PATIENCE_S
                    if time.monotonic() > patience:
                        self.dropped_for_output += 1
                        return

    def _reconnect(self, why: str) -> bool:
        """Reopen the source with backoff for ``reconnect_timeout`` s; False when it stays lost."""
        control, limits = self.control, self.limits
        control.log(f"warning: {why}; reconnecting for up to {limits.reconnect_timeout:g} s")
        control.state = "reconnecting"
        self.source.close()
        deadline, attempt = time.monotonic() + limits.reconnect_timeout, 0
        while not control.stop.is_set():
            if self._out_of_time():
                control.end("duration")
                return False
            left = deadline - time.monotonic()
            if left <= 0:
                control.end("source_lost", f"source {self.source} lost: {why}, and not back after "
                                           f"{limits.reconnect_timeout:g} s of reconnecting "
                                           f"({attempt} attempt{'' if attempt == 1 else 's'}): "
                                           "check the sender, or raise --reconnect-timeout")
                return False
            time.sleep(min(BACKOFF_S[min(attempt, len(BACKOFF_S) - 1)], left))
            attempt += 1
            try:
                self.source.open(max(0.1, min(limits.open_timeout, deadline - time.monotonic())))
            except ConvSegError:
                continue
            self.reconnects += 1
            control.state = "running"
            control.log(f"reconnected to {self.source} after {attempt} attempt(s)")
            return True
        return False


class Inference:
    """Takes the newest frame and runs the model on it, until the mailbox closes; hands the
    model's output to the finishing stage (a bounded queue: inference waits when it is full)."""

    def __init__(self, segmenter: Segmenter, mailbox: Mailbox, board: MaskBoard, finishing: queue.Queue,
                 tally: Tally, control: Control) -> None:
        self.segmenter, self.mailbox, self.board, self.finishing = segmenter, mailbox, board, finishing
        self.tally, self.control = tally, control
        self.cpu_s = 0.0  # this thread's CPU time, set when it ends (a runtime's own worker threads not included)

    def run(self) -> None:
        cpu = time.thread_time()
        try:
            while (job := self.mailbox.take()) is not None:
                frame = job.frame
                self.board.taking(frame.index)
                try:
                    model_input = job.model_input if job.model_input is not None else \
                        self.segmenter.prepare(frame.image)
                    raw = self.segmenter.infer(model_input)
                except BaseException:
                    self.board.abandon(frame.index)
                    self.tally.skipped(1)  # taken, never inferred
                    raise
                self.finishing.put((frame, raw))
        except ConvSegError as exc:
            self.control.end("error", str(exc))
        except Exception as exc:  # noqa: BLE001
            self.control.end("error", f"inference failed: {one_line(exc)}")
        finally:
            self.mailbox.close(discard=True)  # counts a frame left behind as skipped
            self.finishing.put(END)
            self.cpu_s = time.thread_time() - cpu


class Finish:
    """The model's output to the frame's mask and its region statistics, published on the board,
    on a thread of its own (off the model's); closes the board once inference has ended."""

    def __init__(self, segmenter: Segmenter, finishing: queue.Queue, board: MaskBoard, tally: Tally,
                 control: Control) -> None:
        self.segmenter, self.finishing, self.board, self.tally, self.control = segmenter, finishing, board, tally, control
        self.cpu_s = 0.0  # this thread's CPU time, set when it ends

    def run(self) -> None:
        from convseg_deploy.deploy.render import region_stats

        cpu = time.thread_time()
        try:
            while (item := self.finishing.get()) is not END:
                frame, raw = item
                try:
                    mask = self.segmenter.finish(raw, frame.image.shape[:2])
                    stats = region_stats(mask)
                except BaseException:
                    self.board.abandon(frame.index)
                    self.tally.skipped(1)  # inferred, but it never had a mask
                    raise
                result = MaskResult(frame.index, frame.arrival, time.perf_counter(), mask, stats["polyp_area"],
                                    stats["bbox"])
                self.board.publish(result)
                self.tally.inferred(result.latency_ms)
        except Exception as exc:  # noqa: BLE001 - any failure ends the run with its message, never silently
            self.control.end("error", str(exc) if isinstance(exc, ConvSegError) else
                             f"postprocessing failed: {one_line(exc)}")
            while (item := self.finishing.get()) is not END:  # inference still hands over what it holds
                self.board.abandon(item[0].index)
                self.tally.skipped(1)
        finally:
            self.board.close()
            self.cpu_s = time.thread_time() - cpu


class Output:
    """Every captured frame, in order, with the newest fresh mask drawn, to every sink; the
    frame's record to frames.jsonl once inference has settled it. Never waits for the model,
    except in ``every_frame`` mode, where each frame waits for its own mask."""

    def __init__(self, frames: queue.Queue, board: MaskBoard, sinks: list[Sink], log_file: FramesLog | None,
                 tally: Tally, control: Control, max_mask_age_ms: float, fps: float, every_frame: bool) -> None:
        self.frames, self.board, self.sinks, self.log_file = frames, board, sinks, log_file
        self.tally, self.control, self.max_age, self.fps, self.every_frame = tally, control, max_mask_age_ms, fps, every_frame
        self.pending: deque[FrameRecord] = deque()
        self.failed: list[str] = []
        self._opened = False
        self.cpu_s = 0.0  # this thread's CPU time (overlay, encoding calls), set when it ends

    def run(self) -> None:
        cpu = time.thread_time()
        try:
            self._run()
        finally:
            self.cpu_s = time.thread_time() - cpu

    def _run(self) -> None:
        try:
            while (frame := self.frames.get()) is not END:
                self._show(frame)
            if not self.board.wait_closed(timeout=60.0):
                self.control.end("error", "inference did not finish its last frame within 60 s")
            self._flush(final=True)
            for sink in self._working():
                self._guard(sink, sink.close)
        except Exception as exc:  # noqa: BLE001
            self.control.end("error", f"output failed: {one_line(exc)}")
            for sink in self._working():
                sink.abort()
            while self.frames.get() is not END:  # capture still hands over what it holds: take it
                pass

    def _working(self) -> list[Sink]:
        return [s for s in self.sinks if s.error is None]

    def _guard(self, sink: Sink, call: Callable[..., None], *args: object) -> None:
        """Run one sink's call; a failure stops that sink only, with a one-line warning."""
        try:
            call(*args)
        except Exception as exc:  # noqa: BLE001 - ConvSegError, or a library's own
            sink.error = str(exc) if isinstance(exc, ConvSegError) else f"{sink.name} failed: {one_line(exc)}"
            self.failed.append(sink.error)
            self.control.log(f"warning: {sink.error}; the run goes on without it")
            sink.abort()

    def _show(self, frame: Captured) -> None:
        from convseg_deploy.deploy.render import overlay

        if not self._opened:
            self._opened = True
            for sink in self.sinks:
                self._guard(sink, sink.open, frame.image.shape[:2], self.fps)
        result = self.board.newest_for(frame.index, self.every_frame, self.control.abort)
        age = (frame.arrival - result.arrival) * 1000.0 if result is not None else None
        fresh = result is not None and age is not None and age <= self.max_age
        if self.sinks:
            picture = overlay(frame.image, _fit(result.mask, frame.image)) if fresh else \
                _noted(frame.image, "no mask yet" if result is None else f"no mask: {age:.0f} ms old")
            for sink in self._working():
                self._guard(sink, sink.write, picture)
                if isinstance(sink, Display) and sink.closed_by_user:
                    self.control.end("interrupt")
        self.tally.shown(time.perf_counter(), age if fresh else None)
        drawn = result if fresh else None
        self.pending.append(FrameRecord(frame.index, frame.wall, False, None, drawn.index if drawn else None,
                                        age if drawn else None, drawn.polyp_area if drawn else None,
                                        drawn.bbox if drawn else None))
        self._flush(final=False)

    def _flush(self, final: bool) -> None:
        """Write the records whose frames inference has settled (all of them at the end)."""
        while self.pending:
            record = self.pending[0]
            settled = self.board.settled(record.index)
            if settled is None:
                if not final:
                    return
                settled = (False, None)
            self.pending.popleft()
            if self.log_file is not None and self.log_file.error is None:
                inferred, latency = settled
                try:
                    self.log_file.write(replace(record, inferred=inferred, latency_ms=latency))
                except ConvSegError as exc:
                    self.failed.append(str(exc))
                    self.control.log(f"warning: {exc}; the run goes on without it")


def _fit(mask: np.ndarray, image: np.ndarray) -> np.ndarray:
    """A mask at the frame's size (a stream may change size between the mask's frame and this one)."""
    from convseg_deploy.imaging import resize_mask

    return mask if mask.shape == image.shape[:2] else resize_mask(mask, image.shape[:2])


def _noted(image: np.ndarray, text: str) -> np.ndarray:
    from convseg_deploy.deploy.render import corner_note

    return corner_note(image, text)
