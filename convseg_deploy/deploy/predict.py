"""``predict``: masks (and overlays, heatmaps, probability maps) for images, folders, globs and videos.

Frames are decoded, preprocessed, run and written one batch at a time, and each frame's record
is streamed to ``records.jsonl`` and ``summary.csv`` (``predict_records``), so a video of any
length needs the memory of one batch. An image gets PNGs (mask, and overlay, heatmap, probability
map on request); a video gets its overlay video (``--overlay``) and PNGs per frame only when
``frame_pngs`` asks for them: an hour of video is 100,000 frames. ``summary.json`` (aggregates
only) is written first with ``"complete": false`` once the model is loaded, and rewritten last
with ``"complete": true`` when every input was processed: a run that stopped part way never looks
finished. Unreadable images are reported, skipped and counted; the run then ends with an error
naming the count.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from convseg_deploy.deploy import render
from convseg_deploy.deploy.inputs import (
    Frame,
    Source,
    batched,
    iter_frames,
    unique_name,
    resolve_inputs,
    total_frames,
)
from convseg_deploy.deploy.predict_records import RecordFiles
from convseg_deploy.deploy.select import Choice, open_runner, plan
from convseg_deploy.errors import ConvSegError
from convseg_deploy.fsutil import check_outputs_apart, claim_out, ensure_dir, run_lock, write_json
from convseg_deploy.imaging import MAX_PIXELS, preprocess, probability_at
from convseg_deploy.runtime.base import Runner

SUMMARY_FORMAT = "convseg-deploy/predict/v2"  # v2: per-frame records in records.jsonl, not in summary.json


@dataclass
class PredictOptions:
    """What to write besides the masks, and how to batch.

    threshold: overrides the model's own mask threshold when set.
    progress: show a tqdm progress bar on stderr.
    device: the CUDA device GPU backends run on.
    max_pixels: the largest image (width x height) decoded; larger ones are refused unread.
    frame_pngs: write PNGs (mask, overlay, heatmap, probability) for every video frame too.
    """

    overlay: bool = False
    heatmap: bool = False
    save_prob: bool = False
    batch_size: int = 4
    threshold: float | None = None
    progress: bool = True
    device: int = 0
    max_pixels: int = MAX_PIXELS
    frame_pngs: bool = False


def postprocess(logits_hw: np.ndarray, size: tuple[int, int], threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """One logit map -> (probability map, bool mask) at the source (height, width).

    Every consumer (predict, the bundle's expected masks, verify's smoke run) goes through here.
    """
    prob = probability_at(logits_hw, size)
    return prob, prob > threshold  # strictly above, as imaging.logits_to_masks


class _Run:
    """One predict run: the active runner, the output folders and what has been written so far."""

    def __init__(self, runner: Runner, choice: Choice, out: Path, options: PredictOptions,
                 log: Callable[[str], None]) -> None:
        self.runner, self.choice, self.out, self.options, self.log = runner, choice, out, options, log
        self.threshold = options.threshold if options.threshold is not None else float(runner.threshold)
        self.records = RecordFiles(out)
        self.mask_pngs = 0
        self.failed: list[dict[str, str]] = []
        self.videos: list[str] = []
        self.video_names: set[str] = set()  # two inputs a/clip.mp4 and b/clip.avi get two overlay videos
        self.sink: render.VideoSink | None = None
        self.sink_source: Path | None = None
        self.folders = {"masks": True, "overlays": options.overlay, "heatmaps": options.heatmap,
                        "probs": options.save_prob}
        self.made: set[str] = set()  # folders created (on their first PNG: a video alone needs none)

    def _png(self, folder: str, name: str, image: np.ndarray) -> None:
        if folder not in self.made:
            ensure_dir(self.out / folder)
            self.made.add(folder)
        render.write_png(self.out / folder / f"{name}.png", image)

    def header(self) -> dict[str, Any]:
        info = self.runner.info
        return {"format": SUMMARY_FORMAT, "model": str(self.choice.path), "backend": info.backend,
                "provider": info.provider, "precision": info.precision, "threshold": self.threshold,
                "batch_size": self.options.batch_size,
                "outputs": [name for name, wanted in self.folders.items() if wanted]}

    def _video_sink(self, frame: Frame) -> render.VideoSink | None:
        """The overlay video of ``frame``'s source, opened on its first frame; closes the previous one."""
        if not self.options.overlay or frame.source.kind != "video":
            return None
        if self.sink_source != frame.source.path:
            self.close_video()
            final = self.out / f"{unique_name(f'{frame.source.path.stem}_overlay', self.video_names)}.mp4"
            self.sink = render.VideoSink(final, frame.source.fps, frame.image.shape[:2])  # type: ignore[union-attr]
            self.sink_source = frame.source.path
        return self.sink

    def close_video(self) -> None:
        if self.sink is not None:
            self.videos.append(self.sink.close().name)
        self.sink, self.sink_source = None, None

    def abort(self) -> None:
        """After a failure or an interrupt: drop the unfinished video and any temporary file an
        interrupt caught between its creation and its cleanup (the run lock makes them ours)."""
        if self.sink is not None:
            self.sink.abort()
        self.sink, self.sink_source = None, None
        self.records.abort()
        for name, wanted in self.folders.items():
            for tmp in (self.out / name).glob(".*.tmp") if wanted else ():
                tmp.unlink(missing_ok=True)

    def run_batch(self, batch: list[Frame]) -> None:
        good = [f for f in batch if f.image is not None]
        for frame in batch:
            if frame.image is None:
                self.failed.append({"source": str(frame.source.path), "error": str(frame.error)})
                self.log(f"skipped {frame.source.path}: {frame.error}")
        if not good:
            return
        inputs = preprocess([f.image for f in good], self.runner.preprocess)
        start = time.perf_counter()
        logits = self.runner.infer(inputs)
        self.runner.synchronize()
        per_frame_ms = (time.perf_counter() - start) * 1000.0 / len(good)
        for frame, logit in zip(good, logits):
            self._write(frame, logit[0], per_frame_ms)

    def _write(self, frame: Frame, logit: np.ndarray, latency_ms: float) -> None:
        rgb = frame.image
        assert rgb is not None
        h, w = rgb.shape[:2]
        prob, mask = postprocess(logit, (h, w), self.threshold)
        pngs = frame.source.kind != "video" or self.options.frame_pngs
        if pngs:
            self._png("masks", frame.name, mask.astype(np.uint8) * 255)
            self.mask_pngs += 1
        drawn = render.overlay(rgb, mask) if self.options.overlay else None
        if drawn is not None:
            if pngs:
                self._png("overlays", frame.name, drawn)
            sink = self._video_sink(frame)
            if sink is not None:
                sink.write(drawn)
        if self.options.heatmap and pngs:
            self._png("heatmaps", frame.name, render.heatmap(rgb, prob))
        if self.options.save_prob and pngs:
            self._png("probs", frame.name, render.prob16(prob))
        stats = render.region_stats(mask)
        self.records.add({"name": frame.name, "source": str(frame.source.path), "frame": frame.index, "width": w,
                           "height": h, "polyp_area": round(stats["polyp_area"], 6), "regions": stats["regions"],
                           "bbox": stats["bbox"], "latency_ms": round(latency_ms, 3)})

    def summary(self, complete: bool, error: str | None = None) -> dict[str, Any]:
        data = {**self.header(), "complete": complete, **self.records.aggregates(), "mask_pngs": self.mask_pngs,
                "failed": self.failed, "videos": self.videos}
        if error:
            data["error"] = error
        return data


def _batch_size(runner: Runner, wanted: int, log: Callable[[str], None]) -> int:
    """``wanted``, lowered to the model's largest batch: an engine's profile or a static-batch ONNX
    file's batch (the backends reject larger ones)."""
    high = runner.max_batch()
    if high is not None and wanted > high:
        why = "the engine's largest (rebuild with --max-batch to raise it)" if runner.info.backend == "tensorrt" \
            else "the model's static batch"
        log(f"batch size lowered from {wanted} to {high}, {why}")
        return high
    return wanted


def predict(model: str | Path, inputs: Sequence[str | Path], out: str | Path, *, backend: str = "auto",
            precision: str | None = None, device: str = "cpu", options: PredictOptions | None = None,
            overwrite: bool = False, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Segment every frame of ``inputs`` with ``model`` into ``out``; return the summary.

    ``out`` is locked for the run; one holding an earlier run's outputs is cleared only with
    ``overwrite``. Raises ConvSegError after writing everything else when some inputs (an image,
    a video or the end of one) could not be read.
    """
    options = options or PredictOptions()
    if options.batch_size < 1:
        raise ConvSegError(f"batch size must be at least 1, got {options.batch_size}")
    if options.threshold is not None and not 0.0 < options.threshold < 1.0:
        raise ConvSegError(f"threshold must be between 0 and 1 (exclusive), got {options.threshold}")
    sources = resolve_inputs(inputs)  # before loading the model: bad inputs fail fast, nothing written
    out = Path(out)
    check_outputs_apart(out, [s.path for s in sources])
    with run_lock(out):  # a second run into this folder fails here, before it writes anything
        claim_out(out, "summary.json", overwrite)
        choices = plan(Path(model), backend, precision, device)
        runner, choice = open_runner(choices, log, device=options.device)
        try:
            log(f"using {choice.label}, precision {runner.info.precision}")
            options = replace(options, batch_size=_batch_size(runner, options.batch_size, log))
            run = _Run(runner, choice, out, options, log)
            summary = _run_all(run, sources, out, options)
        finally:
            runner.deactivate()
    log(f"segmented {run.records.frames} frames into {out}: {run.mask_pngs} mask PNGs"
        + (f", {len(run.videos)} overlay video(s)" if run.videos else "") + ", records.jsonl and summary.csv")
    if run.failed:
        more = f" (and {len(run.failed) - 1} more)" if len(run.failed) > 1 else ""
        raise ConvSegError(f"{len(run.failed)} input(s) could not be read in full: {run.failed[0]['error']}{more}; "
                           f"all are listed in {out / 'summary.json'} and the other frames were written")
    return summary


def _run_all(run: _Run, sources: list[Source], out: Path, options: PredictOptions) -> dict[str, Any]:
    """Every batch of every source, then the CSV and the final summary (written last)."""
    from tqdm import tqdm

    # disable=None: tqdm stays quiet when stderr is not a terminal (logs, CI)
    bar = tqdm(total=total_frames(sources), unit="frame", disable=None if options.progress else True,
               file=sys.stderr, dynamic_ncols=True)
    try:
        write_json(out / "summary.json", run.summary(complete=False))
        for batch in batched(iter_frames(sources, options.max_pixels), options.batch_size):
            run.run_batch(batch)
            bar.update(len(batch))
            batch.clear()  # drop the frames before the next batch is decoded: memory stays one batch
        run.close_video()
    except BaseException as exc:
        run.abort()
        write_json(out / "summary.json", run.summary(complete=False, error=str(exc) or type(exc).__name__))
        raise
    finally:
        bar.close()
    run.records.finish()
    # "complete" only when every input was read in full, and only once everything else is written
    summary = run.summary(complete=not run.failed)
    write_json(out / "summary.json", summary)
    return summary
