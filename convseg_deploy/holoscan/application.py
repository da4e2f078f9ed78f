"""The generated application's entry point: ``python APP/app.py --source SRC --out DIR``.

Order, as ``live``: ``--out`` is locked and claimed and summary.json written with ``"complete":
false``; the model and the source are opened (a failure rewrites the summary with the error and
exits 1 with one line); then the Holoscan graph runs under data-flow tracking until the source
ends, ``--max-frames`` frames were read, or a stage fails; summary.json is rewritten with
``"complete": true`` and ``ended_by``. Exit 0 when it ended by end_of_stream or max_frames.

Schedulers: every-frame runs use the greedy scheduler (one thread: read, infer, write, in turn);
newest-frame runs the event-based scheduler with a thread per operator, so the source keeps
reading while the model works.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from convseg_deploy.errors import ConvSegError, one_line
from convseg_deploy.holoscan.config import REPLAYED_PORT
from convseg_deploy.holoscan.sdk import operator
from convseg_deploy.fsutil import check_outputs_apart, claim_out, run_lock, temp_beside
from convseg_deploy.live.journal import FramesLog, write_summary
from convseg_deploy.live.records import SUMMARY_FILE, Tally, stats
from convseg_deploy.live.command import INTERRUPTED
from convseg_deploy.live.sources import OPEN_TIMEOUT_S

REPLAYER_PREFIX = "replayer:"
FLOW_LOG = "flow_tracking.log"
GOOD_ENDS = ("end_of_stream", "max_frames")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="app.py", description="Segment polyps in a video source with Holoscan.")
    parser.add_argument("--source", required=True, help="video file, URL, /dev/videoN or replayer:FOLDER")
    parser.add_argument("--out", required=True, type=Path, help="folder for masks/, frames.jsonl, summary.json")
    parser.add_argument("--realtime", action="store_true", help="play a file or replayer folder at its frame rate, "
                        "inferring the newest frame")
    parser.add_argument("--max-frames", type=int, help="stop after this many frames")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier run's outputs in --out")
    parser.add_argument("--path", choices=("auto", "gpu", "cpu"), default="auto",
                        help="gpu: NVIDIA's operators; cpu: Python operators on our runners [auto: gpu where an "
                             "NVIDIA driver is present]")
    parser.add_argument("--backend", default="auto", choices=("auto", "onnxruntime", "openvino", "torch"),
                        help="CPU path: the runner, as predict's --backend")
    parser.add_argument("--precision", help="CPU path: which model of the bundle, as predict's --precision")
    parser.add_argument("--bundle", type=Path, help="the bundle, if it moved since the application was written")
    parser.add_argument("--replayer-basename", help="replayer: the recording's basename [app.yaml's]")
    parser.add_argument("--headless", action="store_true", help="GPU path: HolovizOp without a window")
    args = parser.parse_args(argv)
    if args.max_frames is not None and args.max_frames < 1:
        parser.error(f"--max-frames must be at least 1, got {args.max_frames}")
    return args


def is_v4l2(spec: str) -> bool:
    """A V4L2 device path (the GPU path reads it with V4L2VideoCaptureOp, the CPU path with OpenCV)."""
    return str(spec).startswith("/dev/video")


def _use_gpu(choice: str) -> bool:
    from convseg_deploy.hardware.gpu import gpu_expected

    return choice == "gpu" or (choice == "auto" and gpu_expected())


def _open_frames(spec: str, realtime: bool) -> Any:
    from convseg_deploy.live.sources import open_source

    source = open_source(spec, realtime=realtime)
    source.open(OPEN_TIMEOUT_S)
    return source


def _replayer_kwargs(config: dict[str, Any], spec: str, args: argparse.Namespace) -> dict[str, Any]:
    folder = Path(spec[len(REPLAYER_PREFIX):])
    settings = {**config["replayer"], "directory": str(folder), "realtime": bool(args.realtime)}
    if args.replayer_basename:
        settings["basename"] = args.replayer_basename
    if args.max_frames:
        settings["count"] = args.max_frames
    if not (folder / f"{settings['basename']}.gxf_index").is_file():
        raise ConvSegError(f"--source {spec}: no {settings['basename']}.gxf_index in {folder} (a GXF recording; "
                           "name another with --replayer-basename)")
    return settings


def build_app(config: dict[str, Any], args: argparse.Namespace, state: Any, frames_log: FramesLog,
              segmenter: Any, source: Any, gpu: bool) -> Any:
    """The Application: the CPU graph (Python operators) or the GPU graph (NVIDIA's)."""
    from holoscan.core import Application

    from convseg_deploy.holoscan import operators as ops

    realtime = bool(args.realtime) or bool(source is not None and source.live) or is_v4l2(args.source)

    class SegmentationApp(Application):
        def compose(self) -> None:
            if source is not None:
                frames = ops.FrameSourceOp(self, name="frames", source=source, state=state, realtime=realtime,
                                           max_frames=args.max_frames, as_tensor=gpu)
            elif is_v4l2(args.source):
                frames = None  # GPU path: V4L2VideoCaptureOp, added by compose_gpu
            else:
                replayer = operator("VideoStreamReplayerOp")(self, name="replayer",
                                                             **_replayer_kwargs(config, args.source, args))
                frames = replayer
                if not gpu:  # the recording's host tensors as frames for our runners
                    frames = ops.ReplayedFramesOp(self, name="frames", state=state, realtime=realtime)
                    self.add_flow(replayer, frames, {("output", REPLAYED_PORT)})
            if gpu:
                from convseg_deploy.holoscan.gpu_graph import compose_gpu

                compose_gpu(self, config, frames, args, state, frames_log, source, realtime)
                return
            segment = ops.SegmentOp(self, name="segment", segmenter=segmenter, state=state, realtime=realtime)
            writer = ops.MaskWriterOp(self, name="writer", out=args.out, frames_log=frames_log, state=state)
            self.add_flow(frames, segment, {(ops.FRAME_PORT, ops.FRAME_PORT)})
            self.add_flow(segment, writer, {(ops.MASK_PORT, ops.MASK_PORT)})

    app = SegmentationApp()
    if realtime:
        from holoscan.schedulers import EventBasedScheduler

        app.scheduler(EventBasedScheduler(app, name="scheduler", worker_thread_number=3, stop_on_deadlock=True))
    else:
        from holoscan.schedulers import GreedyScheduler

        app.scheduler(GreedyScheduler(app, name="scheduler", stop_on_deadlock=True))
    return app


def _header(args: argparse.Namespace, config: dict[str, Any], segmenter: Any, source: Any, gpu: bool) -> dict[str, Any]:
    ours = config["convseg"]
    info = segmenter.info if segmenter is not None else None
    kind = source.kind if source is not None else "camera" if is_v4l2(args.source) else "replayer"
    return {"source": args.source, "source_kind": kind,
            "backend": info.backend if info else f"holoscan-{ours['inference_backend']}" if gpu else None,
            "provider": info.provider if info else None, "precision": info.precision if info else ours["precision"],
            "model": info.model if info else ours["holoscan_model"] if gpu else None,
            "model_sha256": info.model_sha256 if info else None,
            "threshold": info.threshold if info else ours["threshold"], "framework": "holoscan",
            "path": "gpu" if gpu else "cpu",
            "mode": "newest_frame" if args.realtime or (source is not None and source.live) else "every_frame",
            "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def run(argv: list[str], config_path: Path) -> dict[str, Any]:
    """One run of the application; the final summary (ConvSegError when it could not start)."""
    from convseg_deploy.holoscan.sdk import import_holoscan

    args = parse_args(argv)
    config = yaml.safe_load(config_path.read_text())
    bundle = args.bundle or Path(config["convseg"]["bundle"])
    out = args.out
    if Path(args.source).is_file():
        check_outputs_apart(out, [Path(args.source)])
    with run_lock(out):
        claim_out(out, SUMMARY_FILE, overwrite=args.overwrite)
        header: dict[str, Any] = {"source": args.source, "framework": "holoscan"}
        write_summary(out, Tally().summary(header, complete=False, ended_by=None))
        segmenter = source = None
        try:
            import_holoscan()
            gpu = _use_gpu(args.path)
            if not gpu:
                from convseg_deploy.live.run import LiveOptions, open_segmenter

                segmenter = open_segmenter(str(bundle), args.backend, args.precision, "cpu", LiveOptions(), None,
                                           "grpc", lambda m: print(m, file=sys.stderr))
            if args.source.startswith(REPLAYER_PREFIX):
                _replayer_kwargs(config, args.source, args)  # a missing recording fails here, before the graph
            elif not (gpu and is_v4l2(args.source)):  # V4L2VideoCaptureOp opens its device itself
                source = _open_frames(args.source, args.realtime)
            header = _header(args, config, segmenter, source, gpu)
        except BaseException as exc:
            for part in (segmenter, source):
                if part is not None:
                    part.close()
            write_summary(out, Tally().summary(header, complete=True, ended_by="error", error=one_line(exc)))
            raise
        try:
            return _run_graph(config, args, header, segmenter, source, gpu)
        finally:
            for part in (segmenter, source):
                if part is not None:
                    part.close()


def _run_graph(config: dict[str, Any], args: argparse.Namespace, header: dict[str, Any], segmenter: Any,
               source: Any, gpu: bool) -> dict[str, Any]:
    from holoscan.core import Tracker

    from convseg_deploy.holoscan.operators import RunState
    from convseg_deploy.holoscan.tracking import flow_latencies, tracker_metrics

    out: Path = args.out
    state = RunState()
    frames_log = FramesLog(out)
    flow_tmp = temp_beside(out / FLOW_LOG)
    started = time.perf_counter()
    metrics: dict[str, Any] = {}
    try:
        app = build_app(config, args, state, frames_log, segmenter, source, gpu)
        # every message counts (the Tracker skips the first and last 10 by default: our runs are short)
        with Tracker(app, filename=str(flow_tmp), num_start_messages_to_skip=0, num_last_messages_to_discard=0) as tracker:
            try:
                app.run()
            except KeyboardInterrupt:  # Ctrl-C before Holoscan's own handler was in place
                state.end("interrupt")
            metrics = tracker_metrics(tracker)
        if state.ended_by is None:
            # Our source operator ends every run it reads; a graph that stopped without it was stopped
            # by Holoscan's SIGINT/SIGTERM handler. VideoStreamReplayerOp ends at its recording's end.
            replayed_all = source is None and args.max_frames is not None and state.tally.frames_in >= args.max_frames
            state.end("interrupt" if source is not None else "max_frames" if replayed_all else "end_of_stream")
    except BaseException as exc:
        frames_log.abort()
        flow_tmp.unlink(missing_ok=True)
        state.end("interrupt" if isinstance(exc, KeyboardInterrupt) else "error", one_line(exc))
        write_summary(out, state.tally.summary(header, complete=True, ended_by=state.ended_by, error=state.error))
        raise
    frames_log.close()
    flow_tmp.replace(out / FLOW_LOG)
    latencies = flow_latencies(out / FLOW_LOG)
    tally: Tally = state.tally
    tally.skipped(tally.frames_in - tally.frames_inferred)  # replaced in the model's queue by newer frames
    path = next(iter(latencies), None)
    extra = {"latency_from": f"holoscan Tracker: end-to-end per message on path {path} (first stamp at the source "
                             "operator to the last at the writer), from its log; holoscan_tracker: the Tracker's own "
                             "min/avg/max per path; frames.jsonl latency_ms: our clock, arrival to mask",
             "holoscan_tracker": metrics, "flow_log": str(out / FLOW_LOG), "out": str(out),
             "duration_s": round(time.perf_counter() - started, 3),
             "decode_errors": getattr(source, "decode_errors", 0),
             "ended_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    summary = tally.summary(header, complete=True, ended_by=state.ended_by, error=state.error,
                            outputs={"frames_jsonl": frames_log.report()}, extra=extra)
    summary["latency_ms"] = stats(latencies[path]) if path else stats([])
    write_summary(out, summary)
    return summary


def main(argv: list[str], config_path: Path) -> int:
    """Run; print one line and return the exit status (1 when the run failed or could not start)."""
    try:
        summary = run(argv, config_path)
    except ConvSegError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted before the run started; summary.json says so", file=sys.stderr)
        return INTERRUPTED
    print(f"{summary['frames_in']} frames in, {summary['frames_inferred']} inferred, {summary['frames_out']} masks "
          f"written to {summary['out']}; ended by "
          f"{summary['ended_by']}; latency p50 {summary['latency_ms']['p50']} ms (Holoscan Tracker)")
    if summary["ended_by"] == "interrupt":
        return INTERRUPTED
    if summary["ended_by"] not in GOOD_ENDS:
        print(f"Error: {summary['error'] or summary['ended_by']}", file=sys.stderr)
        return 1
    return 0
