"""How long the two INT8 exports take on the full-size model, measured in one run and checked.

    python -m benchmarks.int8_export_time [--out runs/ov] [--rounds 2] [--calib-count 200]

Uses the full-size checkpoint that ``benchmarks.openvino_targets`` builds in OUT (resnet50, 64
decoder channels, 256x256; trained briefly: export time does not depend on how well a model was
trained), synthesises OUT/calib-200, then runs ``export --precision int8`` and ``export
--precision int8-cpu`` as a user types them (a fresh output folder and a fresh range cache each,
default verification), alternating which goes first in each round so a drift of the shared
machine's speed falls on both. Target (issue 9): the median ``int8`` export takes no longer than
the median ``int8-cpu`` export. Writes OUT/int8-export-time.json; exits 1 when the target is missed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
from pathlib import Path

from convseg_deploy.benchmarks.cpu_targets import run
from convseg_deploy.benchmarks.openvino_targets import prepare

FLAVOURS = ("int8", "int8-cpu")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/ov"))
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--calib-count", type=int, default=200)
    parser.add_argument("--calib-method", help="passed to export [none: its own default, as a user types it]")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    out: Path = args.out
    cli = str(Path(sys.executable).with_name("convseg-deploy"))
    ckpt = prepare(out, cli, args.threads, bench_frames=8, epochs=2, calib=24, train_frames=160)
    calib = out / f"calib-{args.calib_count}"
    if not calib.exists():
        run(cli, "synth", str(calib), "--count", str(args.calib_count), "--size", "256", "--seed", "14")
    seconds: dict[str, list[float]] = {f: [] for f in FLAVOURS}
    quantize: dict[str, list[float]] = {f: [] for f in FLAVOURS}
    for round_ in range(args.rounds):
        for flavour in FLAVOURS if round_ % 2 == 0 else FLAVOURS[::-1]:
            folder = out / "export-time" / f"{flavour}-{round_}"
            shutil.rmtree(folder, ignore_errors=True)
            seconds[flavour].append(round(run(
                cli, "export", "--checkpoint", str(ckpt), "--calib-data", str(calib), "--calib-count", str(args.calib_count),
                *(("--calib-method", args.calib_method) if args.calib_method else ()), "--precision", flavour,
                "--threads", str(args.threads),
                "--min-agreement", "0", "--max-dice-drop", "1", "--out", str(folder)), 1))
            manifest = json.loads((folder / "manifest.json").read_text())
            quantize[flavour] += [a["verification"]["quantize_seconds"] for a in manifest["artifacts"]
                                  if a["precision"] == flavour]
    median = {f: statistics.median(v) for f, v in seconds.items()}
    from convseg_deploy.benchmarks.machine import describe_machine

    verdict = {"machine": describe_machine(args.threads),
               "export_seconds": seconds, "quantize_seconds": quantize, "median_export_seconds": median,
               "int8_over_int8_cpu": round(median["int8"] / median["int8-cpu"], 3),
               "calib_count": args.calib_count, "calib_method": args.calib_method, "threads": args.threads,
               "passed": median["int8"] <= median["int8-cpu"]}
    (out / "int8-export-time.json").write_text(json.dumps(verdict, indent=2) + "\n")
    print(f"{'PASS' if verdict['passed'] else 'FAIL'}  int8 export {median['int8']:.0f} s vs int8-cpu "
          f"{median['int8-cpu']:.0f} s (median of {args.rounds}; ratio {verdict['int8_over_int8_cpu']})")
    return 0 if verdict["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
