"""PNG plots of a bench: FPS per runner and batch size, Dice against FPS, and every row's GMAC/s
against the machine's peaks (roofline-style: how far each row is from what the hardware does).

matplotlib is imported inside the functions with the Agg backend, so the bench needs no
display and ``--help`` never loads matplotlib.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from convseg_deploy.benchmarks.gates import label
from convseg_deploy.fsutil import atomic_path

Result = dict[str, Any]


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # headless: benches run over SSH and in CI
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")  # the temporary name has no .png
    return path


def plot_fps(results: list[Result], path: Path) -> Path:
    """Grouped bars: model-only FPS of each runner, one bar per batch size."""
    plt = _pyplot()
    ok = [r for r in results if r["status"] == "ok"]
    runners = list(dict.fromkeys(label(r) for r in ok))
    batches = sorted({r["batch_size"] for r in ok})
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(runners) + 2), 4.5))
    width = 0.8 / max(len(batches), 1)
    for j, bs in enumerate(batches):
        fps = {label(r): r["fps"] for r in ok if r["batch_size"] == bs}
        xs = [i + j * width for i, name in enumerate(runners) if name in fps]
        ax.bar(xs, [fps[name] for name in runners if name in fps], width, label=f"batch {bs}")
    ax.set_xticks([i + width * (len(batches) - 1) / 2 for i in range(len(runners))])
    ax.set_xticklabels(runners, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("images / s (model only)")
    ax.set_title("Throughput per backend and batch size")
    if batches:
        ax.legend()
    else:
        ax.text(0.5, 0.5, "no row ran", ha="center", va="center", transform=ax.transAxes)
    try:
        return _save(fig, path)
    finally:
        plt.close(fig)


def plot_dice_vs_fps(results: list[Result], path: Path) -> Path:
    """One point per runner at its best batch size: Dice (or, without ground truth, agreement
    with the reference) against model-only FPS."""
    plt = _pyplot()
    best: dict[str, Result] = {}
    for r in results:
        if r["status"] == "ok" and (label(r) not in best or r["fps"] > best[label(r)]["fps"]):
            best[label(r)] = r
    use_dice = any(r["dice"] is not None for r in best.values())
    key = "dice" if use_dice else "agreement"
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    points = [(name, r["fps"], r[key]) for name, r in best.items() if r[key] is not None]
    for name, fps, score in points:
        ax.scatter(fps, score)
        ax.annotate(name, (fps, score), fontsize=7, xytext=(4, 4), textcoords="offset points")
    if not points:
        ax.text(0.5, 0.5, "accuracy unavailable", ha="center", va="center", transform=ax.transAxes)
    else:  # show at least 0.1 of Dice: auto-limits would blow a 1e-5 difference up to full height
        lo, hi = min(p[2] for p in points), max(p[2] for p in points)
        pad = max(0.0, (0.1 - (hi - lo)) / 2) + 0.01
        ax.set_ylim(max(0.0, lo - pad), min(1.0, hi + pad) + 0.005)
        ax.ticklabel_format(axis="y", useOffset=False)
    ax.set_xlabel("images / s (model only, best batch size)")
    ax.set_ylabel("Dice" if use_dice else "mask agreement with the reference")
    ax.set_title("Accuracy against speed")
    ax.grid(alpha=0.3)
    try:
        return _save(fig, path)
    finally:
        plt.close(fig)


PRECISION_COLOURS = {"fp32": "tab:blue", "int8": "tab:orange", "bf16": "tab:green", "fp16": "tab:red"}


def plot_roofline(results: list[Result], peak: dict[str, Any] | None, path: Path) -> Path:
    """One bar per row (its best batch size) of achieved GMAC/s, coloured by precision, under
    the probe's measured peak of each precision (dashed) and the theoretical one (dotted)."""
    from convseg_deploy.benchmarks.efficiency import CPU_PROVIDERS
    from convseg_deploy.hardware.peak import precision_class

    plt = _pyplot()
    best: dict[str, Result] = {}
    for r in results:
        if r["status"] == "ok" and r.get("gmac_per_s") and (label(r) not in best or r["gmac_per_s"] >
                                                             best[label(r)]["gmac_per_s"]):
            best[label(r)] = r
    fig, ax = plt.subplots(figsize=(max(6.5, 0.9 * len(best) + 3), 4.8))
    names = list(best)
    colours = [PRECISION_COLOURS.get(precision_class(best[n]["precision"]) or "", "tab:gray") for n in names]
    ax.bar(range(len(names)), [best[n]["gmac_per_s"] for n in names], color=colours)
    for i, name in enumerate(names):
        if best[name].get("efficiency") is not None:
            ax.annotate(f"{best[name]['efficiency']:.0%}", (i, best[name]["gmac_per_s"]), ha="center", fontsize=7,
                        xytext=(0, 2), textcoords="offset points")
    cpu_rows = any(best[n]["provider"] in CPU_PROVIDERS for n in names)
    for precision, colour in PRECISION_COLOURS.items():
        for key, style, what in (("measured", "--", "measured"), ("theoretical", ":", "theoretical")):
            value = (peak or {}).get(key, {}).get(precision)
            if value and cpu_rows:
                ax.axhline(value, color=colour, linestyle=style, linewidth=1, label=f"CPU {precision} peak, {what}")
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=30, ha="right", fontsize=7)
    ax.set_ylabel("GMAC/s achieved (model only)")
    ax.set_yscale("log")
    ax.set_title("Each row against the machine's peaks (labels: efficiency vs the measured peak)")
    if not names:
        ax.text(0.5, 0.5, "no row with a MAC count ran", ha="center", va="center", transform=ax.transAxes)
    elif ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(alpha=0.3, axis="y")
    try:
        return _save(fig, path)
    finally:
        plt.close(fig)


def write_plots(out: Path, results: list[Result], peak: dict[str, Any] | None = None) -> list[Path]:
    """The plots into ``out``; returns their paths. ``peak``: the probe's summary (roofline lines)."""
    return [plot_fps(results, out / "fps.png"), plot_dice_vs_fps(results, out / "dice_vs_fps.png"),
            plot_roofline(results, peak, out / "roofline.png")]
