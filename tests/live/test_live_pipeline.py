"""The live pipeline's promises, checked without clocks: the video never waits for the model,
inference takes the newest frame, the counts add up, a file in every-frame mode loses nothing.

The source and the segmenter are test doubles that behave as the real ones do where the
pipeline depends on them: the source hands out frames (a live one never waits for its reader),
the segmenter returns a mask of the frame's size and, here, can be held (a stalled model).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from convseg_deploy.live.handover import Mailbox, MaskBoard, MaskResult
from convseg_deploy.live.journal import FramesLog
from convseg_deploy.live.pipeline import Pipeline, Settings
from convseg_deploy.live.records import FRAME_KEYS, Tally
from convseg_deploy.live.segmenters import ModelInfo, Segmenter
from convseg_deploy.live.sources import Captured, Source, captured_now
from convseg_deploy.live.stages import Limits

BOUND_S = 60.0  # bounds every wait; never a judgement of speed


class ListSource(Source):
    """Frames from a list (pixel value = frame number), handed out as soon as asked, ``live`` as a
    camera (frames come whether read or not) or as a file; ``gate(n)`` runs before frame n comes
    (a camera whose next frame is not there yet), and ``gate(count)`` before the end does."""

    kind = "file"

    def __init__(self, count: int, live: bool, gate: Callable[[int], None] | None = None) -> None:
        super().__init__("list://test")
        self.live, self.retry, self.fps = live, False, 30.0
        self.frames = [np.full((32, 48, 3), i % 256, np.uint8) for i in range(count)]
        self.gate, self.given, self.closed = gate, 0, False

    def open(self, timeout: float) -> None:
        pass

    def read(self) -> Captured | None:
        if self.gate is not None:
            self.gate(self.given)
        if not self.frames:
            return None
        self.given += 1
        return captured_now(self.frames.pop(0))

    def close(self) -> None:
        self.closed = True


class HeldSegmenter(Segmenter):
    """A model that does not answer until ``release`` is set (a stalled GPU, a busy server),
    from frame ``held_from`` of its calls on; the mask (the frame's top half) has the frame's
    size, as every segmenter's has. ``entered`` is set when a call starts."""

    info = ModelInfo("test", "cpu", "fp32", "held", None, 0.5)

    def __init__(self, held: bool, held_from: int = 0) -> None:
        self.release, self.entered = threading.Event(), threading.Event()
        if not held:
            self.release.set()
        self.held_from = held_from
        self.seen: list[int] = []

    def infer(self, rgb: np.ndarray) -> np.ndarray:
        self.entered.set()
        if len(self.seen) >= self.held_from and not self.release.wait(BOUND_S):
            raise RuntimeError("the test never released the model")
        self.seen.append(int(rgb[0, 0, 0]))
        mask = np.zeros(rgb.shape[:2], bool)
        mask[: rgb.shape[0] // 2] = True
        return mask


def run(source: ListSource, segmenter: HeldSegmenter, tmp_path: Path, max_mask_age_ms: float = 1e9,
        while_running=None) -> tuple[Pipeline, dict, list[dict]]:
    tally = Tally()
    log = FramesLog(tmp_path)
    settings = Settings(max_mask_age_ms, Limits(None, None, 1.0, 1.0), every_frame=not source.live)
    pipeline = Pipeline(source, segmenter, [], log, tally, settings, lambda _m: None)
    pipeline.start()
    if while_running is not None:
        while_running(tally)
    assert pipeline.wait(BOUND_S), "the pipeline did not finish"
    log.close()
    records = [json.loads(line) for line in (tmp_path / "frames.jsonl").read_text().splitlines()]
    return pipeline, tally.figures(), records


def wait_until(condition, what: str) -> None:
    deadline = time.monotonic() + BOUND_S
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


def test_a_stalled_model_never_holds_the_video_back(tmp_path: Path) -> None:
    model = HeldSegmenter(held=True)
    # the camera's second frame comes once the model is busy with the first; it ends once the
    # model took the newest frame after the one it was stuck on
    source = ListSource(30, live=True, gate=lambda n: (n == 1 and model.entered.wait(BOUND_S))
                        or (n == 30 and wait_until(lambda: len(model.seen) == 2, "the newest frame never taken")))

    def all_shown_then_release(tally: Tally) -> None:
        # every frame reaches the output while the model is stuck on the first one
        wait_until(lambda: tally.frames_out == 30, f"only {tally.frames_out} of 30 frames shown with the model held")
        assert tally.frames_inferred == 0
        model.release.set()

    pipeline, figures, records = run(source, model, tmp_path, while_running=all_shown_then_release)
    assert pipeline.ended_by == "end_of_stream" and source.closed
    # the model saw the frame it was stuck on and then the newest one: nothing queued for it
    assert model.seen == [0, 29]
    assert figures["frames_in"] == figures["frames_out"] == 30
    assert figures["frames_inferred"] == 2 and figures["frames_skipped"] == 28
    assert [r["index"] for r in records] == list(range(30)) and list(records[0]) == list(FRAME_KEYS)
    assert [r["index"] for r in records if r["inferred"]] == [0, 29]
    assert all(r["latency_ms"] is None for r in records if not r["inferred"])
    assert all(r["mask_from"] is None for r in records) and figures["frames_masked"] == 0  # none was ready in time


def test_a_frame_still_waiting_for_the_model_when_the_camera_ends_is_skipped(tmp_path: Path) -> None:
    """It was shown already and its mask would be drawn on nothing; inferring it after the end
    would put a whole model's time of waiting into the run's latency tail."""
    model = HeldSegmenter(held=True)
    source = ListSource(30, live=True, gate=lambda n: n == 1 and model.entered.wait(BOUND_S))

    def all_shown_then_release(tally: Tally) -> None:
        wait_until(lambda: tally.frames_out == 30, f"only {tally.frames_out} of 30 frames shown with the model held")
        wait_until(lambda: source.closed, "the camera never ended")  # ... and ended meanwhile
        model.release.set()

    pipeline, figures, records = run(source, model, tmp_path, while_running=all_shown_then_release)
    assert pipeline.ended_by == "end_of_stream"
    assert model.seen == [0]  # the frame in hand is finished; frame 29, still waiting, is not inferred
    assert figures["frames_inferred"] == 1 and figures["frames_skipped"] == 29 and figures["frames_out"] == 30
    assert [r["index"] for r in records if r["inferred"]] == [0]


def test_a_file_read_as_fast_as_the_model_goes_loses_nothing(tmp_path: Path) -> None:
    source, model = ListSource(40, live=False), HeldSegmenter(held=False)
    pipeline, figures, records = run(source, model, tmp_path, max_mask_age_ms=0.0)
    assert pipeline.ended_by == "end_of_stream"
    assert model.seen == [i % 256 for i in range(40)]  # every frame, in order
    assert figures["frames_inferred"] == figures["frames_out"] == figures["frames_masked"] == 40
    assert figures["frames_skipped"] == 0
    # each frame carries its own mask, so even a maximum age of 0 draws it
    assert all(r["inferred"] and r["mask_from"] == r["index"] and r["mask_age_ms"] == 0.0 for r in records)
    assert all(r["polyp_area"] == 0.5 and r["bbox"] == [0, 0, 48, 16] for r in records)


class BusySegmenter(HeldSegmenter):
    """A model that computes for ``cpu_s`` of its thread's CPU time per frame (not wall time)."""

    def __init__(self, cpu_s: float) -> None:
        super().__init__(held=False)
        self.cpu_s = cpu_s

    def infer(self, rgb: np.ndarray) -> np.ndarray:
        until = time.thread_time() + self.cpu_s
        while time.thread_time() < until:
            pass
        return super().infer(rgb)


def test_the_cpu_profile_gives_each_stage_its_own_threads_cpu(tmp_path: Path) -> None:
    source, model = ListSource(20, live=False), BusySegmenter(cpu_s=0.005)
    pipeline, figures, _ = run(source, model, tmp_path)
    cpu = pipeline.cpu_profile()
    assert figures["frames_inferred"] == 20
    assert cpu["inference"] >= 20 * 0.005 - 0.001  # the model's work is on the inference stage's thread
    assert cpu["capture"] + cpu["finish"] + cpu["output"] < cpu["inference"]  # a list source and no sinks cost far less
    stages = cpu["capture"] + cpu["inference"] + cpu["finish"] + cpu["output"]
    assert stages <= cpu["process"] + 0.003
    assert cpu["other"] == pytest.approx(cpu["process"] - stages, abs=0.003)


@pytest.mark.parametrize("max_age_ms", [0.0, 1e9])
def test_a_mask_older_than_the_limit_is_not_drawn(tmp_path: Path, max_age_ms: float) -> None:
    model = HeldSegmenter(held=True, held_from=1)  # answers frame 0, then stalls
    tally_seen: list[Tally] = []
    # frames 1.. come once frame 0's mask is on the board (tally.inferred is counted after publishing)
    source = ListSource(12, live=True, gate=lambda n: n == 0 or wait_until(
        lambda: tally_seen and tally_seen[0].frames_inferred == 1, "frame 0 never inferred"))

    def shown_then_release(tally: Tally) -> None:
        tally_seen.append(tally)
        wait_until(lambda: tally.frames_out == 12, "frames not shown")
        model.release.set()

    _, figures, records = run(source, model, tmp_path, max_mask_age_ms=max_age_ms, while_running=shown_then_release)
    later = records[1:]
    if max_age_ms == 0.0:  # frame 0's mask exists for all of them, but is older than 0 ms
        assert all(r["mask_from"] is None and r["mask_age_ms"] is None for r in later)
    else:
        assert all(r["mask_from"] == 0 and r["mask_age_ms"] > 0 and r["polyp_area"] == 0.5 for r in later)
    assert figures["frames_masked"] == sum(r["mask_from"] is not None for r in records)


def test_mailbox_keeps_the_newest_and_counts_the_rest() -> None:
    skipped: list[int] = []
    box, stop = Mailbox(every_frame=False, on_skip=skipped.append), threading.Event()
    frames = [captured_now(np.zeros((2, 2, 3), np.uint8)) for _ in range(3)]
    for i, frame in enumerate(frames):
        frame.index = i
        assert box.put(frame, stop)
    assert box.take() is frames[2] and sum(skipped) == 2
    box.put(frames[0], stop)
    box.close(discard=True)
    assert box.take() is None and sum(skipped) == 3
    assert not box.put(frames[1], stop)  # closed


def test_every_frame_mailbox_waits_for_the_frame_to_be_taken() -> None:
    box, stop = Mailbox(every_frame=True, on_skip=lambda n: pytest.fail("every-frame mode skipped a frame")), \
        threading.Event()
    frames = [captured_now(np.zeros((2, 2, 3), np.uint8)) for _ in range(2)]
    assert box.put(frames[0], stop)
    second = threading.Thread(target=box.put, args=(frames[1], stop))
    second.start()
    second.join(0.2)
    assert second.is_alive()  # waits while the first frame is not taken
    assert box.take() is frames[0]
    second.join(BOUND_S)
    assert box.take() is frames[1]


def test_board_never_gives_a_mask_from_a_later_frame() -> None:
    board, stop = MaskBoard(keep=4), threading.Event()
    mask = np.zeros((2, 2), bool)
    for index in (3, 7):
        board.taking(index)
        board.publish(MaskResult(index, float(index), float(index) + 0.1, mask, 0.0, None))
    assert board.newest_for(2, wait=False, abort=stop) is None
    assert board.newest_for(5, wait=False, abort=stop).index == 3
    assert board.newest_for(9, wait=False, abort=stop).index == 7
    assert board.settled(3) == (True, pytest.approx(100.0)) and board.settled(4) == (False, None)
    assert board.settled(8) is None  # not taken yet: unknown
    board.close()
    assert board.settled(8) == (False, None)


class ThreadedSegmenter(HeldSegmenter):
    """Records which thread ran each of its three parts; ``finish_wait`` holds each postprocessing
    until the model has taken the next frame (a finishing thread that lags the model)."""

    def __init__(self, finish_wait: bool = False) -> None:
        super().__init__(held=False)
        self.threads: dict[str, set[str]] = {"prepare": set(), "infer": set(), "finish": set()}
        self.finish_wait, self.taken = finish_wait, threading.Semaphore(0)

    def prepare(self, rgb: np.ndarray) -> np.ndarray:
        self.threads["prepare"].add(threading.current_thread().name)
        return rgb

    def infer(self, rgb: np.ndarray) -> np.ndarray:
        self.threads["infer"].add(threading.current_thread().name)
        self.taken.release()
        return super().infer(rgb)

    def finish(self, raw: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
        self.threads["finish"].add(threading.current_thread().name)
        if self.finish_wait:
            self.taken.acquire(timeout=0.5)  # the model's next call (none comes after the last frame)
            time.sleep(0.02)  # ... and then some: the next frames reach the output meanwhile
        return raw


@pytest.mark.parametrize("live", [False, True])
def test_the_models_thread_runs_the_model_only(tmp_path: Path, live: bool) -> None:
    model = ThreadedSegmenter()
    source = ListSource(10, live=live, gate=(lambda n: n and wait_until(lambda: len(model.seen) >= n, "frame")) if live
                        else None)
    _, figures, records = run(source, model, tmp_path)
    assert figures["frames_inferred"] == 10 and all(r["inferred"] for r in records)
    assert model.threads["infer"] == {"live-inference"} and model.threads["finish"] == {"live-finish"}
    # every frame inferred: capture prepares it; newest frame only: the model's thread prepares what it takes
    assert model.threads["prepare"] == ({"live-inference"} if live else {"live-capture"})


def test_a_frame_whose_mask_is_still_being_finished_is_not_counted_as_passed_over(tmp_path: Path) -> None:
    model = ThreadedSegmenter(finish_wait=True)  # frame n's mask is published only after frame n+1 was taken
    # a camera whose frame n comes once the model has taken frame n-1: the output shows frame n
    # (and settles frame n-1's record) while frame n-1's mask is still being finished
    source = ListSource(12, live=True, gate=lambda n: n and wait_until(lambda: len(model.seen) >= n, "frame"))
    _, figures, records = run(source, model, tmp_path)
    assert figures["frames_inferred"] == 12 and figures["frames_skipped"] == 0
    assert [r["inferred"] for r in records] == [True] * 12 and all(r["latency_ms"] is not None for r in records)


class BrokenFinish(HeldSegmenter):
    """Postprocessing that fails on its third frame."""

    finished = 0

    def finish(self, raw: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
        if self.finished == 2:
            raise ValueError("mask of the wrong shape")
        self.finished += 1
        return raw


def test_a_failing_postprocessing_ends_the_run_with_its_message_and_the_counts_add_up(tmp_path: Path) -> None:
    pipeline, figures, records = run(ListSource(20, live=False), BrokenFinish(held=False), tmp_path)
    assert pipeline.ended_by == "error" and pipeline.error == "postprocessing failed: ValueError: mask of the wrong shape"
    assert figures["frames_inferred"] + figures["frames_skipped"] == figures["frames_in"]
    assert figures["frames_inferred"] == 2 and figures["frames_out"] == figures["frames_in"] == len(records)
    assert sum(r["inferred"] for r in records) == figures["frames_inferred"]


class BrokenPrepare(HeldSegmenter):
    """Preprocessing that fails on the fourth frame (capture's thread, every-frame mode)."""

    def prepare(self, rgb: np.ndarray) -> np.ndarray:
        if int(rgb[0, 0, 0]) == 3:
            raise ValueError("frame of the wrong depth")
        return rgb


def test_a_failing_preprocessing_ends_the_run_with_its_message_and_the_counts_add_up(tmp_path: Path) -> None:
    pipeline, figures, records = run(ListSource(20, live=False), BrokenPrepare(held=False), tmp_path)
    assert pipeline.ended_by == "error"
    assert pipeline.error == "preprocessing frame 3 failed: ValueError: frame of the wrong depth"
    # an error aborts: a frame inference had not taken yet is dropped (skipped), so 1 to 3 were inferred
    assert figures["frames_in"] == figures["frames_out"] == len(records) == 4
    assert figures["frames_inferred"] + figures["frames_skipped"] == 4 and records[3]["inferred"] is False
    assert sum(r["inferred"] for r in records) == figures["frames_inferred"]
