"""``live``: run a model on a live source until it ends, and say how it went.

Order of a run, so that bad input fails fast and leaves nothing but a summary that says why:
``--out`` is locked and claimed and ``summary.json`` written with ``"complete": false``; then
the outputs and the source are checked (a bad ``--record`` path, no screen for ``--display``, a
missing camera or file, an unknown scheme), the model is opened (a local runner, or the served
model on Triton), and the source is opened (an unreachable URL or a pipeline GStreamer cannot
parse fails within ``--open-timeout``). A failure there rewrites the summary with the error and
leaves nothing else. Only then do ``frames.jsonl`` and the outputs begin. Every end rewrites the summary with ``"complete": true``
and ``ended_by``. Ctrl-C (SIGINT, and SIGTERM) ends the run as ``interrupt``.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from convseg_deploy.errors import ConvSegError
from convseg_deploy.fsutil import check_outputs_apart, claim_out, run_lock, sha256_file
from convseg_deploy.live.cores import CorePlan, pin_this_thread, plan_cores, this_thread_cores
from convseg_deploy.live.journal import FramesLog, write_summary
from convseg_deploy.live.outputs import Display, Recording, Sink, StreamOut, check_record, check_stream_url
from convseg_deploy.live.pipeline import Pipeline, Settings
from convseg_deploy.live.records import SUMMARY_FILE, Tally
from convseg_deploy.live.segmenters import ModelInfo, RunnerSegmenter, Segmenter, TritonSegmenter
from convseg_deploy.live.sources import OPEN_TIMEOUT_S, STALL_TIMEOUT_S, Source, open_source
from convseg_deploy.live.stages import Limits
from convseg_deploy.live.status import StatusLine

DEFAULT_MAX_MASK_AGE_MS = 200.0
DEFAULT_RECONNECT_S = 10.0
STATUS_EVERY_S = 1.0


@dataclass
class LiveOptions:
    """How a live run behaves (the ``live`` command's options).

    realtime: pace a video file at its own frame rate, as a camera would deliver it.
    max_mask_age_ms: the oldest mask still drawn on a frame (see records: mask_age_ms).
    reconnect_timeout: how long a dropped source is reopened before the run ends as source_lost.
    open_timeout: how long opening a network or GStreamer source may take.
    stall_timeout: how long a live source may stay silent before it counts as dropped.
    threads: CPU threads of the backend (None: the backend's default).
    spin: ONNX Runtime's CPU workers busy-wait between parallel sections (ort_session.session_options).
        Off by default: they would hold the cores that decoding and encoding need (benchmarks.live_profile).
    pin_cores: the model's ``threads`` on cores of their own, the video path on the rest (live.cores).
    ffmpeg_options: FFmpeg options for files and URLs (``rtsp_transport=tcp``).
    """

    realtime: bool = False
    max_mask_age_ms: float = DEFAULT_MAX_MASK_AGE_MS
    duration: float | None = None
    max_frames: int | None = None
    reconnect_timeout: float = DEFAULT_RECONNECT_S
    open_timeout: float = OPEN_TIMEOUT_S
    stall_timeout: float = STALL_TIMEOUT_S
    record: Path | None = None
    stream_out: str | None = None
    display: bool = False
    threshold: float | None = None
    threads: int | None = None
    spin: bool = False
    pin_cores: bool = False
    cuda_device: int = 0
    status: bool = True
    ffmpeg_options: dict[str, str] = field(default_factory=dict)


def check_values(options: LiveOptions) -> None:
    """The numbers (the command line checks them too; this is for callers of ``live``)."""
    if options.max_mask_age_ms < 0:
        raise ConvSegError(f"--max-mask-age-ms must be 0 or more, got {options.max_mask_age_ms:g}")
    for name, value in (("--duration", options.duration), ("--reconnect-timeout", options.reconnect_timeout),
                        ("--open-timeout", options.open_timeout), ("--stall-timeout", options.stall_timeout)):
        if value is not None and value <= 0:
            raise ConvSegError(f"{name} must be a positive number of seconds, got {value:g}")
    if options.max_frames is not None and options.max_frames < 1:
        raise ConvSegError(f"--max-frames must be at least 1, got {options.max_frames}")
    if options.threshold is not None and not 0.0 < options.threshold < 1.0:
        raise ConvSegError(f"--threshold must be between 0 and 1 (exclusive), got {options.threshold:g}")


def check_outputs(options: LiveOptions, out: Path) -> None:
    """Where the video goes: a writable recording path, a stream URL we can send to, a screen."""
    if options.record is not None:
        check_record(options.record, out)
    if options.stream_out is not None:
        check_stream_url(options.stream_out)
    if options.display:
        Display.check()


def open_segmenter(model: str, backend: str, precision: str | None, device: str, options: LiveOptions,
                   triton_url: str | None, protocol: str, log: Callable[[str], None]) -> Segmenter:
    """The model the run uses: a runner chosen as ``predict`` chooses it, or a served model."""
    if backend == "triton":
        if not triton_url:
            raise ConvSegError("--backend triton needs --triton-url HOST:PORT")
        if options.threshold is not None:
            raise ConvSegError("--threshold: a Triton frames-in model thresholds inside its graph; drop --threshold")
        return TritonSegmenter(triton_url, protocol, model or None)
    if triton_url:
        raise ConvSegError("--triton-url is for --backend triton")
    from convseg_deploy.deploy.select import open_runner, plan

    runner, choice = open_runner(plan(Path(model), backend, precision, device), log, device=options.cuda_device,
                                 threads=options.threads, spin=options.spin)
    threshold = options.threshold if options.threshold is not None else float(runner.threshold)
    info = ModelInfo(runner.info.backend, runner.info.provider, runner.info.precision, str(choice.path),
                     sha256_file(choice.path), threshold)
    log(f"using {choice.label}, precision {runner.info.precision}")
    return RunnerSegmenter(runner, info, threshold)


def _header(spec: str, source: Source | None, model: str, options: LiveOptions,
            segmenter: Segmenter | None) -> dict[str, Any]:
    info = segmenter.info if segmenter is not None else None
    return {"source": spec, "source_kind": source.kind if source else None, "backend": info.backend if info else None,
            "provider": info.provider if info else None, "precision": info.precision if info else None,
            "model": info.model if info else model or None, "model_sha256": info.model_sha256 if info else None,
            "threshold": info.threshold if info else options.threshold, "max_mask_age_ms": options.max_mask_age_ms,
            "mode": None if source is None else "newest_frame" if source.live else "every_frame",
            "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (a service stopping, ``docker stop``) ends the run like Ctrl-C, with its summary."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def live(model: str, source: str, out: str | Path, *, backend: str = "auto", precision: str | None = None,
         device: str = "cpu", triton_url: str | None = None, protocol: str = "grpc",
         options: LiveOptions | None = None, overwrite: bool = False,
         log: Callable[[str], None] = print) -> dict[str, Any]:
    """Segment ``source`` live into ``out`` until it ends; return the final summary.

    Raises ConvSegError (after writing a summary that says why) when the run cannot start. A run
    that started returns its summary however it ended: the caller turns ``ended_by`` and failed
    outputs into its exit code.
    """
    options = options or LiveOptions()
    out = Path(out)
    check_values(options)
    if Path(source).is_file():
        check_outputs_apart(out, [Path(source)])
    with run_lock(out):
        claim_out(out, SUMMARY_FILE, overwrite)
        tally = Tally()
        header = _header(source, None, model, options, None)
        write_summary(out, tally.summary(header, complete=False, ended_by=None))
        src: Source | None = None
        segmenter: Segmenter | None = None
        cores: CorePlan | None = None
        caller_cores = this_thread_cores() if options.pin_cores else None
        try:  # from here on every failure leaves a summary that says why, and nothing else
            check_outputs(options, out)
            cores = plan_cores(options.threads) if options.pin_cores else None
            src = open_source(source, realtime=options.realtime, options=options.ffmpeg_options,
                              stall_timeout=options.stall_timeout)
            header = _header(source, src, model, options, None)
            if cores is not None:  # the runtime's worker threads start on the model's cores ...
                pin_this_thread(cores.model)
            segmenter = open_segmenter(model, backend, precision, device, options, triton_url, protocol, log)
            if cores is not None:  # ... the decoder's threads, the sinks and the stages but one on the video's
                pin_this_thread(cores.video)
                log(f"pinned: {cores.describe()}")
            header = _header(source, src, model, options, segmenter)
            if cores is not None:
                header["cores"] = cores.as_dict()
            src.open(options.open_timeout)
        except BaseException as exc:
            if caller_cores is not None:
                pin_this_thread(caller_cores)
            if segmenter is not None:
                segmenter.close()
            if src is not None:
                src.close()
            error = str(exc) if isinstance(exc, ConvSegError) else type(exc).__name__
            ended = "interrupt" if isinstance(exc, KeyboardInterrupt) else "error"
            write_summary(out, tally.summary(header, complete=True, ended_by=ended, error=error))
            raise
        try:
            return _run(src, segmenter, out, header, tally, options, log, cores)
        finally:
            segmenter.close()
            if caller_cores is not None:  # a caller of live() gets its thread back as it was
                pin_this_thread(caller_cores)


def _sinks(options: LiveOptions) -> list[Sink]:
    sinks: list[Sink] = []
    if options.record is not None:
        sinks.append(Recording(options.record))
    if options.stream_out is not None:
        sinks.append(StreamOut(options.stream_out))
    if options.display:
        sinks.append(Display())
    return sinks


def _run(source: Source, segmenter: Segmenter, out: Path, header: dict[str, Any], tally: Tally,
         options: LiveOptions, log: Callable[[str], None], cores: CorePlan | None) -> dict[str, Any]:
    frames_log = FramesLog(out)
    sinks = _sinks(options)
    limits = Limits(options.max_frames, options.duration, options.reconnect_timeout, options.open_timeout)
    settings = Settings(options.max_mask_age_ms, limits, every_frame=not source.live)
    pipeline = Pipeline(source, segmenter, sinks, frames_log, tally, settings, log,
                        model_cores=cores.model if cores is not None else None)
    write_summary(out, tally.summary(header, complete=False, ended_by=None, extra={"source_fps": source.fps}))
    status = StatusLine(tally) if options.status else None
    started = time.perf_counter()
    try:
        with _sigterm_as_interrupt():
            pipeline.start()
            try:
                while not pipeline.wait(STATUS_EVERY_S):
                    if status is not None:
                        status.tick(pipeline.control.state)
            except KeyboardInterrupt:
                pipeline.stop("interrupt")
            while True:  # the stages finish what they hold; a second Ctrl-C does not cut the summary short
                try:
                    if pipeline.wait(STATUS_EVERY_S):
                        break
                except KeyboardInterrupt:
                    continue
    except BaseException as exc:  # a failure of this function itself: nothing half-written stays behind
        pipeline.stop("error", f"live failed: {type(exc).__name__}: {exc}")
        pipeline.wait(30.0)
        frames_log.abort()
        for sink in sinks:
            sink.abort()
        write_summary(out, tally.summary(header, complete=True, ended_by="error", error=pipeline.error))
        raise
    if status is not None:
        status.done(f"ended by {pipeline.ended_by}")
    return _finish(pipeline, frames_log, sinks, out, header, tally, time.perf_counter() - started)


def _finish(pipeline: Pipeline, frames_log: FramesLog, sinks: list[Sink], out: Path, header: dict[str, Any],
            tally: Tally, seconds: float) -> dict[str, Any]:
    frames_log.close()
    warnings = list(pipeline.output.failed)
    if pipeline.capture.dropped_for_output:
        warnings.append(f"the outputs could not keep up with the source: {pipeline.capture.dropped_for_output} "
                        "frames were not shown")
    outputs: dict[str, Any] = {"frames_jsonl": frames_log.report(), **{s.name: s.report() for s in sinks}}
    extra = {"source_fps": pipeline.capture.source.fps or None, "reconnects": pipeline.capture.reconnects,
             "frames_not_shown": pipeline.capture.dropped_for_output,
             "decode_errors": getattr(pipeline.capture.source, "decode_errors", 0),
             "duration_s": round(seconds, 3), "cpu_s": pipeline.cpu_profile(),
             "ended_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    summary = tally.summary(header, complete=True, ended_by=pipeline.ended_by or "error", error=pipeline.error,
                            outputs=outputs, warnings=warnings, extra=extra)
    write_summary(out, summary)
    return summary


def failed_outputs(summary: dict[str, Any]) -> list[str]:
    """The outputs that stopped or missed frames, as one-line reasons (empty: all complete)."""
    problems = [f"{name}: {report['error']}" for name, report in summary["outputs"].items() if report.get("error")]
    if summary.get("frames_not_shown"):
        problems.append(f"{summary['frames_not_shown']} frames were not shown (the outputs could not keep up)")
    return problems
