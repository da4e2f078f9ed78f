"""Issue 22's target for the export defaults, measured with the real commands and checked.

    python -m benchmarks.export_defaults_target [--checkpoint runs/demo/train/best.pt]
        [--data runs/demo/data/heldout] [--out runs/export-defaults] [--calib-count 32]

1. ``export`` with the default settings, calibrated on ``--calib-count`` frames of ``--data``
   (the demo's 60 held-out frames): it must pass its own check and write the ``int8`` file;
2. ``bench`` of that export on all of ``--data``: the ``int8`` file's Dice drop against PyTorch
   FP32 must be at most bench's default ``--max-dice-drop``;
3. the same export with ``--calib-method minmax``: the export's check must see what bench
   measures. Either it refuses the ``int8`` file (not written), or the file it passes loses at
   most bench's default ``--max-dice-drop`` on all of ``--data`` (it is benched to find out).
   The issue asked for a refusal, because minmax ranges lost 0.0256 Dice on the plateau-trained
   demo checkpoint of 2026-11-28; on the one-cycle checkpoint min/max ranges lose nothing, and a
   check that refused a file bench finds as good as FP32 would be a false alarm. Whether it was
   refused is recorded (``minmax_refused``) next to the verdict.
Writes OUT/export-defaults.json (numbers, machine) and exits 1 when a target is missed. Needs the
demo checkpoint of ``make demo`` (or any checkpoint and a folder of frames with masks).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from convseg_deploy.artifacts.names import DEFAULT_MAX_DICE_DROP


def run(*args: str) -> subprocess.CompletedProcess:
    """Run the CLI, echoing its output; the caller judges the exit status."""
    print("$", " ".join(args), flush=True)
    done = subprocess.run(args, capture_output=True, text=True)
    print(done.stdout + done.stderr, flush=True)
    return done


def _int8_entry(folder: Path) -> dict[str, Any] | None:
    manifest = folder / "manifest.json"
    if not manifest.exists():
        return None
    return next((a for a in json.loads(manifest.read_text())["artifacts"] if a["precision"] == "int8"), None)


def _bench_int8(cli: str, checkpoint: Path, data: Path, export: Path, out: Path, threads: int) -> dict[str, Any]:
    """bench's int8 row (dice, dice_drop, agreement) of ``export`` on all of ``data``."""
    run(cli, "bench", "--checkpoint", str(checkpoint), "--artifacts", str(export), "--data", str(data),
        "--backends", "torch,onnxruntime", "--providers", "cpu", "--batch-sizes", "1", "--warmup", "1", "--iters", "2",
        "--threads", str(threads), "--no-progress", "--out", str(out))  # its own gates may fail: judged here
    report = json.loads((out / "report.json").read_text())
    row = next(r for r in report["results"] if r["precision"] == "int8" and r["status"] == "ok")
    return {"dice": row["dice"], "dice_drop": row["dice_drop"], "agreement": row["agreement"],
            "machine": report["machine"]}


def _within(bench: dict[str, Any] | None) -> bool:
    drop = (bench or {}).get("dice_drop")
    return drop is not None and drop <= DEFAULT_MAX_DICE_DROP


def judge(numbers: dict[str, Any], minmax_refused: bool) -> dict[str, bool]:
    """The verdicts, from what the runs gave (pure: tested on made-up runs)."""
    return {
        "default export passes and writes int8": numbers["default_export_exit"] == 0
        and numbers.get("default_int8_check") is not None,
        f"default int8 bench Dice drop <= {DEFAULT_MAX_DICE_DROP}": _within(numbers.get("default_int8_bench")),
        # refused (and the export says so with its exit status), or passed and bench agrees
        "minmax int8: the export's check agrees with bench": numbers["minmax_export_exit"] != 0 if minmax_refused
        else _within(numbers.get("minmax_int8_bench")),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=Path("runs/demo/train/best.pt"))
    parser.add_argument("--data", type=Path, default=Path("runs/demo/data/heldout"))
    parser.add_argument("--out", type=Path, default=Path("runs/export-defaults"))
    parser.add_argument("--calib-count", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    cli = str(Path(sys.executable).with_name("convseg-deploy"))
    out: Path = args.out
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    common = ("--checkpoint", str(args.checkpoint), "--calib-data", str(args.data), "--calib-count",
              str(args.calib_count), "--threads", str(args.threads))
    default = run(cli, "export", *common, "--out", str(out / "default"))
    entry = _int8_entry(out / "default")
    numbers: dict[str, Any] = {"default_export_exit": default.returncode,
                               "default_int8_check": entry["verification"] if entry else None}
    if entry:
        numbers["default_int8_bench"] = _bench_int8(cli, args.checkpoint, args.data, out / "default", out / "bench-default",
                                                    args.threads)
    minmax = run(cli, "export", *common, "--calib-method", "minmax", "--out", str(out / "minmax"))
    refused = _int8_entry(out / "minmax") is None
    numbers["minmax_export_exit"], numbers["minmax_refused"] = minmax.returncode, refused
    numbers["minmax_refusal"] = next((line for line in (minmax.stdout + minmax.stderr).splitlines()
                                      if line.startswith("Error:")), None)
    if not refused:
        numbers["minmax_int8_check"] = _int8_entry(out / "minmax")["verification"]  # type: ignore[index]
        numbers["minmax_int8_bench"] = _bench_int8(cli, args.checkpoint, args.data, out / "minmax", out / "bench-minmax",
                                                   args.threads)
    checks = judge(numbers, refused)
    result = {"machine": (numbers.get("default_int8_bench") or {}).get("machine"), "numbers": numbers, "passed": checks}
    (out / "export-defaults.json").write_text(json.dumps(result, indent=2) + "\n")
    for name, ok in checks.items():
        print(f"{'PASS' if ok else 'FAIL'}  {name}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
