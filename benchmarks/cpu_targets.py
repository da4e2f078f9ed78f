"""The CPU numbers the README quotes, measured in one run on this machine and checked.

    python -m benchmarks.cpu_targets [--out runs/cpu-targets] [--train-frames 240] [--epochs 2]

What it does, end to end with the real commands (so it measures what users run):
1. synthesises frames at 256x256 (calibration/verification set, and a bench set);
2. trains the default ConvSegNet (resnet50 encoder, 64 decoder channels) briefly at 64x64 on
   CPU: the weights and BatchNorm statistics of a trained model, at a cost this machine can
   afford (a 256x256 resnet50 training step takes seconds per frame here);
3. times ``export --precision fp32`` at 256x256 (export + verification; target <= 90 s) and the
   INT8 step with 200 calibration frames (target <= 300 s);
4. runs ``bench`` at batch 1 with PyTorch FP32 and ONNX Runtime FP32/int8-cpu, every backend on
   the same thread count, and checks the ratios: ORT FP32 >= 1.2x PyTorch FP32 FPS, int8-cpu
   >= 4x PyTorch FP32 FPS with mask agreement >= 0.97;
5. runs ``benchmarks.overhead`` (harness within 5% of a bare InferenceSession loop).
Writes OUT/targets.json and exits 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

TARGETS = {"fp32_export_s": 90.0, "int8_calibration_s": 300.0, "ort_fp32_speedup": 1.2, "int8_cpu_speedup": 4.0,
           "int8_cpu_agreement": 0.97}


def run(*args: str) -> float:
    """Run the CLI (or a module) and return its wall time in seconds; stop on failure."""
    start = time.perf_counter()
    print("$", " ".join(args), flush=True)
    subprocess.run(args, check=True)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/cpu-targets"))
    parser.add_argument("--train-frames", type=int, default=240)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--iters", type=int, default=10)
    args = parser.parse_args()
    out: Path = args.out
    cli = str(Path(sys.executable).with_name("convseg-deploy"))
    out.mkdir(parents=True, exist_ok=True)
    if not (out / "calib").exists():
        run(cli, "synth", str(out / "calib"), "--count", "216", "--size", "256", "--seed", "11")
        run(cli, "synth", str(out / "bench"), "--count", "16", "--size", "256", "--seed", "12")
        run(cli, "synth", str(out / "train-data"), "--count", str(args.train_frames), "--size", "64", "--seed", "13")
    ckpt = out / "train" / "best.pt"
    if not ckpt.exists():
        run(cli, "train", "--data", str(out / "train-data"), "--out", str(out / "train"), "--encoder", "resnet50",
            "--image-size", "64", "--epochs", str(args.epochs), "--batch-size", "8", "--lr", "2e-3", "--no-augment",
            "--device", "cpu", "--no-progress")
    common = ("--checkpoint", str(ckpt), "--image-size", "256", "256", "--calib-data", str(out / "calib"),
              "--threads", str(args.threads))
    fp32_s = run(cli, "export", *common, "--out", str(out / "fp32-only"), "--precision", "fp32")
    all_s = run(cli, "export", *common, "--out", str(out / "export"), "--precision", "fp32,int8-cpu",
                "--calib-count", "200", "--calib-cache", str(out / "fresh-cache.json"))
    (out / "fresh-cache.json").unlink(missing_ok=True)  # the next run calibrates afresh too
    run(cli, "bench", "--checkpoint", str(ckpt), "--artifacts", str(out / "export"), "--data", str(out / "bench"),
        "--backends", "torch,onnxruntime", "--providers", "cpu", "--batch-sizes", "1", "--threads", str(args.threads),
        "--warmup", "2", "--iters", str(args.iters), "--max-dice-drop", "1", "--out", str(out / "report"), "--no-progress")
    report = json.loads((out / "report" / "report.json").read_text())
    rows = {(r["backend"], r["precision"]): r for r in report["results"] if r["status"] == "ok"}
    torch_fps = rows[("torch", "fp32")]["fps"]
    numbers = {
        "fp32_export_s": round(fp32_s, 1),
        # the INT8 step is the second export's time beyond its own FP32 export and check
        "int8_calibration_s": round(all_s - fp32_s, 1),
        "torch_fp32_fps": torch_fps,
        "ort_fp32_fps": rows[("onnxruntime", "fp32")]["fps"],
        "int8_cpu_fps": rows[("onnxruntime", "int8-cpu")]["fps"],
        "ort_fp32_speedup": rows[("onnxruntime", "fp32")]["fps"] / torch_fps,
        "int8_cpu_speedup": rows[("onnxruntime", "int8-cpu")]["fps"] / torch_fps,
        "int8_cpu_agreement": rows[("onnxruntime", "int8-cpu")]["agreement"],
    }
    overhead = subprocess.run([sys.executable, "-m", "benchmarks.overhead", str(out / "export" / "model.fp32.onnx"),
                               "--threads", str(args.threads)], capture_output=True, text=True)
    print(overhead.stdout + overhead.stderr)
    checks = {
        "fp32_export_s": numbers["fp32_export_s"] <= TARGETS["fp32_export_s"],
        "int8_calibration_s": numbers["int8_calibration_s"] <= TARGETS["int8_calibration_s"],
        "ort_fp32_speedup": numbers["ort_fp32_speedup"] >= TARGETS["ort_fp32_speedup"],
        "int8_cpu_speedup": numbers["int8_cpu_speedup"] >= TARGETS["int8_cpu_speedup"],
        "int8_cpu_agreement": numbers["int8_cpu_agreement"] >= TARGETS["int8_cpu_agreement"],
        "harness_overhead": overhead.returncode == 0,
    }
    result = {"machine": report["machine"], "numbers": numbers, "targets": TARGETS, "passed": checks,
              "overhead_output": overhead.stdout.strip()}
    (out / "targets.json").write_text(json.dumps(result, indent=2) + "\n")
    for name, ok in checks.items():
        print(f"{'PASS' if ok else 'FAIL'}  {name}: {numbers.get(name, '')}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
