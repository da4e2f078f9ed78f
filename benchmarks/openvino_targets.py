"""The OpenVINO numbers the README quotes: one bench run on the full-size model, checked.

    python -m benchmarks.openvino_targets [--out runs/ov] [--iters 5] [--bench-frames 8]

1. builds (once; kept in OUT) a full-size ConvSegNet (resnet50, 64 decoder channels, 256x256)
   the way ``benchmarks.cpu_targets`` does, but smaller: trained for 2 epochs on 64x64 crops of
   160 synthetic frames, exported to fp32, int8 (TensorRT flavour) and int8-cpu with 24
   calibration frames (the speed of a file does not depend on how long it was trained or
   calibrated; its agreement does, and a weakly trained model agrees less);
2. runs ONE ``bench`` at batch 1 with PyTorch (fp32, bf16 where the CPU has BF16), ONNX Runtime
   and OpenVINO (f32, bf16 where the CPU has BF16, throughput rows), every backend on the same
   thread count, parity against PyTorch fp32;
3. checks: the best INT8 OpenVINO latency row >= 10x PyTorch FP32 FPS and >= 3x PyTorch bf16
   FPS with agreement >= 0.97; the best OpenVINO row of the fp32 file (f32, or bf16 with
   agreement >= 0.99) faster than ONNX Runtime FP32. A target whose rows were skipped here
   (no BF16 on this CPU) is reported as not measurable, not as passed.
Also times OpenVINO's start-up without, with an empty and with a filled model cache, and reports
the model's work per frame (GMAC, ``convseg_deploy.artifacts.macs``) and what each row achieves (GMAC/s): the targets are
ratios of compute-bound rows, so they are bounded by the CPU's INT8:FP32 multiply-accumulate rate
per cycle (4:1 with AVX-512 VNNI, 16:1 with AMX).
Writes OUT/targets.json; exits 1 when a measured target is missed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from convseg_deploy.benchmarks.cpu_targets import run
from convseg_deploy.artifacts.macs import count_macs
from convseg_deploy.artifacts.names import DEFAULT_MIN_AGREEMENT

INT8_VS_TORCH, INT8_VS_TORCH_BF16, BF16_AGREEMENT = 10.0, 3.0, 0.99


def prepare(out: Path, cli: str, threads: int, bench_frames: int, epochs: int, calib: int, train_frames: int) -> Path:
    """Data, a trained full-size checkpoint and its exports, each made once."""
    if not (out / "train-data").exists():
        run(cli, "synth", str(out / "calib"), "--count", "48", "--size", "256", "--seed", "11")
        run(cli, "synth", str(out / "bench"), "--count", str(bench_frames), "--size", "256", "--seed", "12")
        run(cli, "synth", str(out / "train-data"), "--count", str(train_frames), "--size", "256", "--seed", "13")
    ckpt = out / "train" / "best.pt"
    if not ckpt.exists():
        run(cli, "train", "--data", str(out / "train-data"), "--out", str(out / "train"), "--encoder", "resnet50",
            "--image-size", "256", "--crop-size", "64", "--epochs", str(epochs), "--batch-size", "8", "--lr", "2e-3",
            "--no-augment", "--device", "cpu", "--no-progress")
    if not (out / "export" / "manifest.json").exists():
        run(cli, "export", "--checkpoint", str(ckpt), "--calib-data", str(out / "calib"), "--threads", str(threads),
            "--out", str(out / "export"), "--precision", "fp32,int8,int8-cpu", "--min-agreement", "0",
            "--max-dice-drop", "1",
            "--calib-count", str(calib), "--verify-count", "8")
    return ckpt


def startup_seconds(onnx: Path, cache: Path, threads: int) -> dict[str, float]:
    """Seconds from nothing to a compiled batch-1 model: without the model cache, with an empty
    cache (compiles and writes the blob) and with the filled cache (reads the blob back)."""
    import shutil
    import time

    from convseg_deploy.runtime.openvino_runner import OpenVinoRunner

    shutil.rmtree(cache, ignore_errors=True)
    times = {}
    for name, folder in (("no_cache", False), ("cold_cache", cache), ("warm_cache", cache)):
        start = time.perf_counter()
        with OpenVinoRunner(onnx, threads=threads, cache_dir=folder):
            times[name] = round(time.perf_counter() - start, 2)
    return times


def best(rows: list[dict[str, Any]], keep: Any) -> dict[str, Any] | None:
    ok = [r for r in rows if r["status"] == "ok" and keep(r)]
    return max(ok, key=lambda r: r["fps"]) if ok else None


def judge(results: list[dict[str, Any]], gmac: float) -> dict[str, Any]:
    """Numbers and verdicts (True/False, or None where the rows could not run here); ``gmac``:
    the model's work per frame."""
    def row(backend: str, provider: str, precision: str) -> dict[str, Any] | None:
        return best(results, lambda r: (r["backend"], r["provider"], r["precision"]) == (backend, provider, precision))

    torch32, torch16, ort32 = row("torch", "cpu", "fp32"), row("torch", "cpu", "bf16"), row("onnxruntime", "cpu", "fp32")
    int8 = best(results, lambda r: r["backend"] == "openvino" and r["provider"] == "cpu"
                and r["precision"] in ("int8", "int8-cpu"))
    fp32_file = best(results, lambda r: r["backend"] == "openvino" and r["provider"] == "cpu"
                     and Path(r["artifact"]).name == "model.fp32.onnx"
                     and (r["precision"] == "fp32" or (r["agreement"] or 0) >= BF16_AGREEMENT))
    numbers: dict[str, Any] = {
        "rows": {f"{r['backend']}/{r['provider']}/{r['precision']} {Path(r['artifact'] or '-').name}":
                 {"status": r["status"], "fps": r["fps"], "p50_ms": (r["latency_ms"] or {}).get("p50"),
                  "agreement": r["agreement"], "reason": r["reason"], "requests_in_flight": r.get("requests_in_flight"),
                  "gmac_per_s": round(gmac * r["fps"], 1) if r["fps"] else None}
                 for r in results},
        "gmac_per_frame": round(gmac, 2),
        "best_int8_openvino": int8 and f"{int8['precision']} {Path(int8['artifact']).name}",
        "best_fp32_file_openvino": fp32_file and fp32_file["precision"],
    }
    checks: dict[str, bool | None] = {}
    if int8 and torch32:
        numbers["int8_vs_torch_fp32"] = round(int8["fps"] / torch32["fps"], 2)
        checks["int8_vs_torch_fp32"] = numbers["int8_vs_torch_fp32"] >= INT8_VS_TORCH
    numbers["int8_vs_torch_bf16"] = round(int8["fps"] / torch16["fps"], 2) if int8 and torch16 else None
    checks["int8_vs_torch_bf16"] = None if numbers["int8_vs_torch_bf16"] is None else numbers["int8_vs_torch_bf16"] >= INT8_VS_TORCH_BF16
    if int8:
        numbers["int8_agreement"] = int8["agreement"]
        checks["int8_agreement"] = (int8["agreement"] or 0) >= DEFAULT_MIN_AGREEMENT["int8"]
    if fp32_file and ort32:
        numbers["fp32_file_vs_ort_fp32"] = round(fp32_file["fps"] / ort32["fps"], 3)
        checks["fp32_file_vs_ort_fp32"] = numbers["fp32_file_vs_ort_fp32"] > 1.0
    return {"numbers": numbers, "passed": checks}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/ov"))
    parser.add_argument("--bench-frames", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--train-frames", type=int, default=160)
    parser.add_argument("--calib-count", type=int, default=24)
    args = parser.parse_args()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    cli = str(Path(sys.executable).with_name("convseg-deploy"))
    ckpt = prepare(out, cli, args.threads, args.bench_frames, args.epochs, args.calib_count, args.train_frames)
    export = out / "export"
    files = ",".join(str(export / f"model.{p}.onnx") for p in ("fp32", "int8", "int8-cpu"))
    # Not `run`: a failed row makes bench exit 1 after writing its report, and this script judges that report.
    subprocess.run([cli, "bench", "--checkpoint", str(ckpt), "--artifacts", files, "--data", str(out / "bench"),
                    "--backends", "torch,onnxruntime,openvino", "--providers", "cpu", "--batch-sizes", "1",
                    "--threads", str(args.threads), "--warmup", "2", "--iters", str(args.iters), "--max-dice-drop", "1",
                    "--min-agreement", "0", "--out", str(out / "report"), "--no-progress"], check=False)
    report = json.loads((out / "report" / "report.json").read_text())
    verdict = {"machine": report["machine"], **judge(report["results"], count_macs(export / "model.fp32.onnx").gmac)}
    verdict["numbers"]["startup_s"] = {name: startup_seconds(export / f"model.{name}.onnx", out / "ov-cache", args.threads)
                                       for name in ("fp32", "int8-cpu")}
    (out / "targets.json").write_text(json.dumps(verdict, indent=2) + "\n")
    for name, ok in verdict["passed"].items():
        state = "n/a " if ok is None else "PASS" if ok else "FAIL"
        print(f"{state}  {name}: {verdict['numbers'].get(name)}")
    return 0 if all(ok is not False for ok in verdict["passed"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
