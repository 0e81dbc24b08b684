"""`vqaudio plot --compare`: several runs in two figures.

- `compare_curves.png`: the quantities every run logged, one panel each, the runs overlaid
  (training windows as lines, validation passes as points of the same colour).
- `rate_quality_<metric>.png`: bitrate against a metric. Each run is a point per eval report,
  so a residual model evaluated at every n_q draws its own rate-quality curve; the Opus and
  Codec2 baselines found in the runs' reports (or their sweep's baselines.json) are drawn at
  their rates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from vqaudio.errors import VQAudioError
from vqaudio.evaluation.evaluate import METRICS
from vqaudio.evaluation.plots import SKIP_KEYS, save_figure
from vqaudio.experiments.runs import (
    EvalPoint,
    RunRecord,
    differing_keys,
    find_runs,
    short_names,
)

MAX_PANELS = 12
BASELINE_STYLES = [("s", "0.35"), ("D", "0.55"), ("^", "0.45")]  # codec2, opus, ...: grey, told apart by marker
FIRST_KEYS = ("loss", "nll", "mel", "stft", "perplexity", "codes_used")


@dataclass
class CompareFigures:
    curves: Path
    rate_quality: Path
    runs: int
    points: int  # model points on the rate-quality figure
    baselines: list[str]  # names of the baseline rows drawn


def _shared_keys(runs: list[RunRecord]) -> list[str]:
    per_run = [{k for r in run.curves for k, v in r.items() if k not in SKIP_KEYS and isinstance(v, (int, float))} for run in runs]
    shared = set.intersection(*per_run) if per_run else set()
    shared.discard("lr")
    first = [k for k in FIRST_KEYS if k in shared]
    return (first + sorted(shared - set(first)))[:MAX_PANELS]


def plot_compare_curves(runs: list[RunRecord], path: Path) -> Path:
    keys = _shared_keys(runs)
    if not keys:
        raise VQAudioError("plot --compare: the runs logged no quantity in common (has each trained at least one logged step?)")
    columns = min(3, len(keys))
    rows = math.ceil(len(keys) / columns)
    figure = Figure(figsize=(4.4 * columns, 2.8 * rows), layout="constrained")
    colours = [f"C{i % 10}" for i in range(len(runs))]
    for i, key in enumerate(keys):
        axes = figure.add_subplot(rows, columns, i + 1)
        for run, colour in zip(runs, colours, strict=True):
            train = [(r["step"], r[key]) for r in run.curves if r.get("split") == "train" and key in r]
            valid = [(r["step"], r[key]) for r in run.curves if r.get("split") == "valid" and key in r]
            if train:
                axes.plot(*zip(*train, strict=True), color=colour, linewidth=1.1, label=run.label)
            if valid:
                axes.plot(*zip(*valid, strict=True), color=colour, marker="o", markersize=3.5, linestyle="none")
        axes.set_title(key, fontsize=10)
        axes.set_xlabel("step", fontsize=8)
        axes.tick_params(labelsize=8)
        axes.grid(alpha=0.3)
    handles, labels = figure.axes[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="outside lower center", ncols=min(4, len(runs)), fontsize=8)
    figure.suptitle("training curves (lines: training, points: validation)", fontsize=11)
    return save_figure(figure, path)


def _baseline_family(name: str) -> str:
    return name.split()[0] if name else name


def plot_rate_quality(runs: list[RunRecord], metric: str, path: Path) -> tuple[Path, int, list[str]]:
    if metric not in METRICS:
        raise VQAudioError(f"--metric {metric!r}: choose one of {', '.join(METRICS)}")
    figure = Figure(figsize=(7.5, 5.0), layout="constrained")
    axes = figure.add_subplot(1, 1, 1)
    drawn = 0
    for i, run in enumerate(runs):
        points = sorted((e.bitrate, e.metrics[metric]) for e in run.evals if e.bitrate and metric in e.metrics)
        if points:
            axes.plot(*zip(*points, strict=True), marker="o", color=f"C{i % 10}", label=run.label, linewidth=1.0)
            drawn += len(points)
    baselines: dict[str, EvalPoint] = {}
    for run in runs:
        for point in run.baselines:
            if point.bitrate and metric in point.metrics:
                baselines.setdefault(point.name, point)
    families: dict[str, list[EvalPoint]] = {}
    for point in baselines.values():
        families.setdefault(_baseline_family(point.name), []).append(point)
    for (family, points), (marker, shade) in zip(sorted(families.items()), BASELINE_STYLES * len(families), strict=False):
        ordered = sorted(points, key=lambda p: p.bitrate or 0)
        axes.plot([p.bitrate for p in ordered], [p.metrics[metric] for p in ordered], marker=marker, color=shade,
                  linestyle="--", linewidth=1.0, markerfacecolor="white", label=family)  # fmt: skip
        for p in ordered:
            axes.annotate(p.name, (p.bitrate, p.metrics[metric]), textcoords="offset points", xytext=(4, -10), fontsize=7, color="0.35")
    if not drawn:
        raise VQAudioError(
            f"plot --compare: no run has an eval report with {metric}; write one with "
            f"vqaudio eval -c RUN --json RUN/eval.json (or run them through vqaudio sweep)"
        )
    axes.set_xscale("log")
    plain = FuncFormatter(lambda value, _: f"{value:g}")
    axes.xaxis.set_major_formatter(plain)
    axes.xaxis.set_minor_formatter(plain)
    axes.tick_params(axis="x", which="both", labelsize=8)
    axes.set_xlabel("bitrate (bit/s, raw codes)")
    axes.set_ylabel(METRICS[metric][0])
    axes.grid(alpha=0.3, which="both")
    axes.legend(fontsize=8)
    axes.set_title(f"rate and quality: {METRICS[metric][0]} ({'higher' if METRICS[metric][1] else 'lower'} is better)", fontsize=11)
    save_figure(figure, path)
    return path, drawn, sorted(baselines)


def legend_labels(runs: list[RunRecord]) -> list[str]:
    """Each run's name with the values that set it apart: `t003 codebook_size=512 beta=1`."""
    keys = differing_keys(runs)
    names = short_names(keys)
    return [" ".join([run.label, *(f"{n}={_value(run.recipe.get(k))}" for k, n in zip(keys, names, strict=True))]) for run in runs]


def _value(value: object) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def plot_compare(paths: list[Path], metric: str, out_dir: Path) -> CompareFigures:
    runs = find_runs(paths)
    for run, label in zip(runs, legend_labels(runs), strict=True):
        run.label = label
    curves = plot_compare_curves(runs, out_dir / "compare_curves.png")
    rate_quality, drawn, baselines = plot_rate_quality(runs, metric, out_dir / f"rate_quality_{metric}.png")
    return CompareFigures(curves, rate_quality, len(runs), drawn, baselines)
