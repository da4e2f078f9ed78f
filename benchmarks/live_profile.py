"""Where a live run's time goes, and ONNX Runtime's spinning on and off, side by side in one run.

    python -m benchmarks.live_profile [--out runs/live-targets] [--threads 2] [--rounds 2]

Uses the models ``benchmarks.live_targets`` prepares (the same ``--out``, made once). For each
round, alternating ``--spin`` and ``--no-spin`` so that drift on the machine hits both alike:

- the demo model on a file read as fast as it goes (every frame inferred), in this process with
  the segmenter's parts timed (preprocess, ``runner.infer``, postprocess and region statistics),
  against the model's own ``bench`` time: which part of a frame is the model's and which is not;
- the full model on the 30 fps UDP stream with ``--record`` for ``--seconds``, as a ``live``
  process: ``fps_inferred`` against bench, latency p99, and ``cpu_s`` (CPU seconds per stage of
  the pipeline, the rest of the process, and the sender's own).

Writes OUT/profile.json and prints one line per run. A measurement, not a check: it has no target.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from convseg_deploy.benchmarks.live_targets import MODELS, SOURCE_FPS, bench, live, prepare
from convseg_deploy.benchmarks.senders import Sender, free_udp_port, udp_url


def timed_file_run(onnx: Path, video: Path, out: Path, threads: int, spin: bool) -> dict[str, Any]:
    """``live`` on a file in this process, with each part of ``RunnerSegmenter`` timed on the
    thread that runs it (preprocess: capture's; infer: the model's; postprocess with region
    statistics: the finishing stage's)."""
    import shutil

    from convseg_deploy.deploy.render import region_stats
    from convseg_deploy.live import segmenters
    from convseg_deploy.live.run import LiveOptions
    from convseg_deploy.live.run import live as run_live

    parts: dict[str, list[float]] = {"preprocess": [], "infer": [], "postprocess": []}
    cls = segmenters.RunnerSegmenter
    originals = {"prepare": cls.prepare, "infer": cls.infer, "finish": cls.finish}

    def timed(name: str, call: Any, extra: Any = None) -> Any:
        def wrapper(*args: Any) -> Any:
            t0 = time.perf_counter()
            result = call(*args)
            if extra is not None:
                extra(result)  # what Finish.run does next, timed here with the rest of the frame's own work
            parts[name].append((time.perf_counter() - t0) * 1000.0)
            return result
        return wrapper

    shutil.rmtree(out, ignore_errors=True)
    cls.prepare = timed("preprocess", originals["prepare"])  # type: ignore[method-assign]
    cls.infer = timed("infer", originals["infer"])  # type: ignore[method-assign]
    cls.finish = timed("postprocess", originals["finish"], region_stats)  # type: ignore[method-assign]
    try:
        summary = run_live(str(onnx), str(video), out, backend="onnxruntime",
                           options=LiveOptions(threads=threads, spin=spin, status=False), log=lambda _: None)
    finally:
        for name, call in originals.items():
            setattr(cls, name, call)
    return {"fps_inferred": summary["fps_inferred"], "frames_inferred": summary["frames_inferred"],
            "cpu_s": summary["cpu_s"], "duration_s": summary["duration_s"],
            "ms_per_frame": {k: round(float(np.mean(v)), 3) for k, v in parts.items()},
            "infer_ms_p99": round(float(np.percentile(parts["infer"], 99)), 3)}


def stream_run(cli: str, onnx: Path, video: Path, out: Path, threads: int, seconds: float, spin: bool,
               ) -> dict[str, Any]:
    port = free_udp_port()
    with Sender(video, udp_url(port), seconds + 30) as sender:
        summary, _ = live(cli, onnx, f"udp://127.0.0.1:{port}", out, threads,
                          ["--duration", f"{seconds:g}", "--record", str(out / "live.mp4"), "--open-timeout", "30",
                           "--spin" if spin else "--no-spin"])
        sender.stop()
    return {"fps_inferred": summary["fps_inferred"], "frames_in": summary["frames_in"],
            "latency_ms": summary["latency_ms"], "fps_in": summary["fps_in"], "fps_out": summary["fps_out"],
            "cpu_s": summary["cpu_s"], "duration_s": summary["duration_s"], "sender_cpu_s": sender.cpu_s}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/live-targets"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each stream run")
    args = parser.parse_args()
    from convseg_deploy.synth import write_video

    cli = str(Path(sys.executable).with_name("convseg-deploy"))
    demo, full = (prepare(args.out, cli, name, args.threads) for name in ("demo", "full"))
    result: dict[str, Any] = {"threads": args.threads, "demo": {}, "full": {}}
    demo_bench = bench(cli, demo, args.out / "demo" / "data", args.out / "demo" / "bench", args.threads, iters=300)
    full_bench = bench(cli, full, args.out / "full" / "data", args.out / "full" / "bench", args.threads, iters=100)
    result["machine"] = demo_bench.pop("machine")
    full_bench.pop("machine")
    result["demo"]["bench"], result["full"]["bench"] = demo_bench, full_bench
    print(f"bench demo {demo_bench['fps']:.1f} FPS mean {demo_bench['latency_ms']['mean']:.2f} ms; "
          f"full {full_bench['fps']:.2f} FPS p99 {full_bench['latency_ms']['p99']}", flush=True)
    long = write_video(args.out / "demo" / "profile.mp4", count=int(6 * demo_bench["fps"]), size=MODELS["demo"]["size"],
                       seed=23, fps=SOURCE_FPS)
    clip = write_video(args.out / "full" / "clip.mp4", count=300, size=MODELS["full"]["size"], seed=22, fps=SOURCE_FPS)
    for round_ in range(args.rounds):
        order = (True, False) if round_ % 2 == 0 else (False, True)
        for spin in order:
            key = "spin" if spin else "no_spin"
            run = timed_file_run(demo, long, args.out / "demo" / f"profile-{key}", args.threads, spin)
            result["demo"].setdefault(key, []).append(run)
            print(f"demo file {key}: {run['fps_inferred']:.1f} FPS = {run['fps_inferred'] / demo_bench['fps']:.3f}x "
                  f"bench; ms/frame {run['ms_per_frame']}; cpu_s {run['cpu_s']}", flush=True)
        for spin in order:
            key = "spin" if spin else "no_spin"
            run = stream_run(cli, full, clip, args.out / "full" / f"profile-{key}", args.threads, args.seconds, spin)
            result["full"].setdefault(key, []).append(run)
            print(f"full stream {key}: {run['fps_inferred']:.2f} FPS = {run['fps_inferred'] / full_bench['fps']:.3f}x "
                  f"bench; p99 {run['latency_ms']['p99']} ms; cpu_s {run['cpu_s']}; sender {run['sender_cpu_s']} s",
                  flush=True)
    (args.out / "profile.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out / 'profile.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
