"""The one place that wires the live stages together, starts them and stops them.

Two modes, chosen by the source:

- *newest frame* (cameras, network streams, GStreamer, a ``--realtime`` file): frames arrive
  whether we read them or not, so capture never waits; inference takes the newest frame and
  skips the rest; output shows every frame at the source's rate with the newest mask that is
  fresh enough, and never waits for the model.
- *every frame* (a file without ``--realtime``): a file can wait and a camera cannot, so the file
  is read as fast as the model goes, every frame is inferred and shown with its own mask
  (mask age 0). Nothing is skipped.

Ending: capture stops (end of the source, ``--duration``, ``--max-frames``, a source that stays
lost, an error, or ``stop``), closes the hand-over to inference (dropping, as skipped, a frame
not taken yet, except a file's in every-frame mode at its end or limit) and queues END; inference finishes the frame in hand and closes the
board; output shows every frame still queued, writes the last records and closes the sinks.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from convseg_deploy.live.cores import pin_this_thread
from convseg_deploy.live.handover import Mailbox, MaskBoard
from convseg_deploy.live.journal import FramesLog
from convseg_deploy.live.outputs import Sink
from convseg_deploy.live.records import Tally
from convseg_deploy.live.segmenters import Segmenter
from convseg_deploy.live.sources import Source
from convseg_deploy.live.stages import Capture, Control, Finish, Inference, Limits, Output

LIVE_QUEUE_FRAMES = 32  # about a second of video between capture and output; more means outputs cannot keep up
FILE_QUEUE_FRAMES = 4
LIVE_MASKS_KEPT = 8  # each is a frame-sized mask; output normally draws the newest or the one before
FINISHING_QUEUE = 4  # model outputs waiting for the finishing thread (it takes a fraction of a model's time)


@dataclass(frozen=True)
class Settings:
    max_mask_age_ms: float
    limits: Limits
    every_frame: bool


class Pipeline:
    """Capture -> (every frame) -> Output, Capture -> (newest frame) -> Inference -> (model output)
    -> Finish -> (masks) -> Output. The model's thread runs the model only: where every frame is
    inferred, capture prepares each frame's model input; Finish turns outputs into masks."""

    def __init__(self, source: Source, segmenter: Segmenter, sinks: list[Sink], frames_log: FramesLog | None,
                 tally: Tally, settings: Settings, log: Callable[[str], None],
                 model_cores: frozenset[int] | None = None) -> None:
        every = settings.every_frame
        queue_frames = FILE_QUEUE_FRAMES if every else LIVE_QUEUE_FRAMES
        self.control = Control(log)
        self.tally = tally
        self._cpu_at_start = time.process_time()
        mailbox = Mailbox(every, tally.skipped)
        # every-frame: inference may run ahead of output by the queue and the mailbox
        board = MaskBoard(keep=queue_frames + 4 if every else LIVE_MASKS_KEPT)
        frames: queue.Queue = queue.Queue(maxsize=queue_frames)
        finishing: queue.Queue = queue.Queue(maxsize=FINISHING_QUEUE)
        # newest-frame mode skips frames: preparing each one in capture would spend CPU on frames no model sees
        self.capture = Capture(source, mailbox, frames, tally, settings.limits, self.control, every,
                               segmenter.prepare if every else None)
        self.inference = Inference(segmenter, mailbox, board, finishing, tally, self.control)
        self.finish = Finish(segmenter, finishing, board, tally, self.control)
        self.output = Output(frames, board, sinks, frames_log, tally, self.control, settings.max_mask_age_ms,
                             source.fps, every)
        # consumers first, so that the first frame finds them running
        self._threads = [threading.Thread(target=target, name=f"live-{name}", daemon=True)
                         for name, target in (("output", self.output.run), ("finish", self.finish.run),
                                              ("inference", self._on_cores(self.inference.run, model_cores)),
                                              ("capture", self.capture.run))]

    @staticmethod
    def _on_cores(run: Callable[[], None], cores: frozenset[int] | None) -> Callable[[], None]:
        """``run`` on ``cores`` (``--pin-cores``: the model's thread), else where the thread starts."""
        if cores is None:
            return run

        def pinned() -> None:
            pin_this_thread(cores)
            run()
        return pinned

    def start(self) -> None:
        self._cpu_at_start = time.process_time()
        for thread in self._threads:
            thread.start()

    def cpu_profile(self) -> dict[str, float]:
        """CPU seconds of the run (after ``wait`` returned True): the whole process since ``start``,
        each stage's own thread, and ``other``: the threads no stage owns (a runtime's intra-op
        workers, FFmpeg's codec threads, the status line). Where the model's cores go on a small machine."""
        total = time.process_time() - self._cpu_at_start
        stages = {"capture": self.capture.cpu_s, "inference": self.inference.cpu_s, "finish": self.finish.cpu_s,
                  "output": self.output.cpu_s}
        return {"process": round(total, 3), **{k: round(v, 3) for k, v in stages.items()},
                "other": round(max(0.0, total - sum(stages.values())), 3)}

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for every stage to finish; True when they all have."""
        for thread in self._threads:
            thread.join(timeout)
            if thread.is_alive():
                return False
        return True

    def stop(self, reason: str, error: str | None = None) -> None:
        """End the run (``interrupt``, ``error``); the stages finish as described above."""
        self.control.end(reason, error)

    @property
    def ended_by(self) -> str | None:
        return self.control.ended_by

    @property
    def error(self) -> str | None:
        return self.control.error
