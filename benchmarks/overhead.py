"""Does the harness add cost of its own? Compare its model-only FPS with a bare ONNX Runtime loop.

The bare loop is the least anyone can do: one ``InferenceSession.run`` after another on the same
input, one clock read before and one after, with the very session options the runner uses
(``session_options``). The harness side is ``timing.time_model`` over an ``OnnxRuntimeRunner``,
exactly as ``bench`` times a row. The two alternate in rounds (ABBA order) so that a shared,
noisy machine slows both alike, and the verdict is the median of the per-round ratios.

    python -m benchmarks.overhead MODEL.onnx [--batch-size 1] [--iters 20] [--rounds 6]

prints both FPS and their ratio, and exits 1 when the harness is more than 5% slower.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np

from convseg_deploy.benchmarks.timing import time_model
from convseg_deploy.errors import ConvSegError

MAX_SLOWDOWN = 0.05


@dataclass(frozen=True)
class Overhead:
    """bare_fps and harness_fps over all rounds; ratio = median over rounds of harness/bare FPS."""

    bare_fps: float
    harness_fps: float
    ratio: float
    rounds: int
    iters: int

    @property
    def passed(self) -> bool:
        return self.ratio >= 1.0 - MAX_SLOWDOWN


def bare_seconds(session: object, input_name: str, output_name: str, batch: np.ndarray, iters: int) -> float:
    """Seconds for ``iters`` back-to-back ``session.run`` calls (CPU: run returns when done)."""
    run, outputs, feed = session.run, [output_name], {input_name: batch}  # type: ignore[attr-defined]
    start = time.perf_counter()
    for _ in range(iters):
        run(outputs, feed)
    return time.perf_counter() - start


def measure_overhead(onnx_path: str | Path, *, batch_size: int = 1, iters: int = 20, rounds: int = 6,
                     warmup: int = 3, threads: int | None = None, provider: str = "cpu") -> Overhead:
    """Harness vs bare-loop throughput of ``onnx_path`` on one random batch."""
    import onnxruntime as ort

    from convseg_deploy.ort_session import session_options
    from convseg_deploy.runtime.onnxruntime_runner import OnnxRuntimeRunner

    if rounds < 2 or iters < 1:
        raise ConvSegError(f"need at least 2 rounds and 1 iteration (got {rounds} rounds, {iters} iterations)")
    with OnnxRuntimeRunner(onnx_path, provider=provider, threads=threads) as runner:
        providers = runner.session.get_providers()  # what the runner really got, fallbacks included
        session = ort.InferenceSession(str(onnx_path), sess_options=session_options(threads), providers=providers)
        h, w = runner.preprocess.size
        batch = np.random.default_rng(0).standard_normal((batch_size, 3, h, w), dtype=np.float32)
        in_name, out_name = session.get_inputs()[0].name, session.get_outputs()[0].name
        bare_seconds(session, in_name, out_name, batch, warmup)
        time_model(runner, batch, warmup=warmup, iters=1)
        bare_total = harness_total = 0.0
        ratios = []
        for r in range(rounds):
            first_bare = r % 4 in (0, 3)  # ABBA: neither side always goes first
            sides = ("bare", "harness") if first_bare else ("harness", "bare")
            took = {}
            for side in sides:
                if side == "bare":
                    took[side] = bare_seconds(session, in_name, out_name, batch, iters)
                else:
                    took[side] = float(time_model(runner, batch, warmup=0, iters=iters).sum())
            bare_total += took["bare"]
            harness_total += took["harness"]
            ratios.append(took["bare"] / took["harness"])  # = harness FPS / bare FPS
    images = batch_size * iters * rounds
    return Overhead(images / bare_total, images / harness_total, statistics.median(ratios), rounds, iters)


@click.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--batch-size", default=1, show_default=True, type=click.IntRange(min=1))
@click.option("--iters", default=20, show_default=True, type=click.IntRange(min=1), help="Iterations per round and side.")
@click.option("--rounds", default=6, show_default=True, type=click.IntRange(min=2), help="Alternating rounds.")
@click.option("--warmup", default=3, show_default=True, type=click.IntRange(min=0))
@click.option("--threads", type=click.IntRange(min=1), help="Intra-op threads [physical cores available].")
@click.option("--provider", default="cpu", show_default=True, type=click.Choice(["cpu", "cuda", "tensorrt"]))
def main(model: Path, batch_size: int, iters: int, rounds: int, warmup: int, threads: int | None, provider: str) -> None:
    """Compare the bench harness's model-only FPS with a bare ONNX Runtime loop."""
    from convseg_deploy.hardware.cpu import physical_cores
    from convseg_deploy.hardware.cpu import describe, this_cpu

    try:
        result = measure_overhead(model, batch_size=batch_size, iters=iters, rounds=rounds, warmup=warmup,
                                  threads=threads or physical_cores(), provider=provider)
    except ConvSegError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"machine: {describe(this_cpu())}")
    click.echo(f"bare onnxruntime loop: {result.bare_fps:.2f} FPS")
    click.echo(f"harness model-only:    {result.harness_fps:.2f} FPS")
    verdict = "ok" if result.passed else f"FAIL: the harness is more than {MAX_SLOWDOWN:.0%} slower"
    click.echo(f"ratio harness/bare:    {result.ratio:.3f} (median of {rounds} rounds; minimum "
               f"{1 - MAX_SLOWDOWN:.2f}): {verdict}")
    if not result.passed:
        raise click.exceptions.Exit(1)


if __name__ == "__main__":  # pragma: no cover
    main()
