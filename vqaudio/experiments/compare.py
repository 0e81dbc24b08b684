"""`vqaudio compare`: the recipe keys that differ between runs, beside their final metrics,
sorted by the objective (a sweep's, or `--sort`). Written to the terminal, CSV, JSON or Markdown."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vqaudio.errors import VQAudioError
from vqaudio.evaluation.evaluate import METRICS
from vqaudio.experiments.runs import (
    RunRecord,
    differing_keys,
    find_runs,
    short_names,
    sweep_objective,
)
from vqaudio.fileio import atomic_output

VALID_LOSS = "valid.loss"


@dataclass
class Comparison:
    runs: list[RunRecord]  # sorted: best first; runs without the sort metric last
    differing: list[str]  # recipe keys whose values are not the same in every run
    metrics: list[str]  # metric columns: eval metrics found, then valid.loss
    sort: str
    direction: str  # maximize or minimize

    @property
    def columns(self) -> list[str]:
        return ["run", *self.differing, "state", "steps", "bitrate", *self.metrics]

    def headers(self) -> list[str]:
        """Column titles for narrow tables: a recipe key's last part when no other differing key shares it."""
        return ["run", *short_names(self.differing), "state", "steps", "bitrate", *self.metrics]

    def records(self) -> list[dict[str, Any]]:
        rows = []
        for run in self.runs:
            full = run.full
            row: dict[str, Any] = {"run": run.label, **{k: run.recipe.get(k) for k in self.differing}}
            rate = full.bitrate if full else None
            row.update(state=run.state, steps=run.step, bitrate=round(rate) if rate is not None and rate == round(rate) else rate)
            row.update({m: run.metric(m) for m in self.metrics})
            rows.append(row)
        return rows


def _direction(metric: str) -> str:
    if metric in METRICS:
        return "maximize" if METRICS[metric][1] else "minimize"
    return "minimize"  # valid.* are losses and distances


def compare_runs(paths: list[Path], sort: str | None = None) -> Comparison:
    runs = find_runs(paths)
    differing = differing_keys(runs)
    found = {m for run in runs if run.full for m in run.full.metrics}
    metrics = [m for m in METRICS if m in found]
    if any(VALID_LOSS.removeprefix("valid.") in run.last_valid for run in runs):
        metrics.append(VALID_LOSS)
    objective = sweep_objective(paths)
    if sort is not None:
        if sort not in METRICS and not sort.startswith("valid."):
            raise VQAudioError(f"--sort {sort!r}: choose an eval metric ({', '.join(METRICS)}) or valid.<name>")
        metric, direction = sort, _direction(sort)
    elif objective is not None:
        metric, direction = objective
    else:
        metric = "pesq_wb" if "pesq_wb" in metrics else (metrics[0] if metrics else VALID_LOSS)
        direction = _direction(metric)
    if metric not in metrics:
        metrics.insert(0, metric)
    sign = -1.0 if direction == "maximize" else 1.0

    def order(run: RunRecord) -> tuple[bool, float]:
        value = run.metric(metric)
        return (value is None, sign * value if value is not None else 0.0)

    return Comparison(sorted(runs, key=order), differing, metrics, metric, direction)


def cell(value: Any) -> str:
    """How a table shows a value."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def to_csv(comparison: Comparison) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=comparison.columns, lineterminator="\n")
    writer.writeheader()
    for row in comparison.records():
        writer.writerow({k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in row.items()})
    return buffer.getvalue()


def to_json(comparison: Comparison) -> str:
    data = {
        "sort": comparison.sort,
        "direction": comparison.direction,
        "differing": comparison.differing,
        "rows": [{**row, "folder": str(run.folder)} for row, run in zip(comparison.records(), comparison.runs, strict=True)],
    }
    return json.dumps(data, indent=2) + "\n"


def to_markdown(comparison: Comparison) -> str:
    lines = ["| " + " | ".join(comparison.columns) + " |", "|" + "---|" * len(comparison.columns)]
    for row in comparison.records():
        lines.append("| " + " | ".join(cell(row[c]).replace("|", "\\|") for c in comparison.columns) + " |")
    return "\n".join(lines) + "\n"


WRITERS = {"csv": to_csv, "json": to_json, "markdown": to_markdown}


def write_comparison(comparison: Comparison, path: Path, kind: str, force: bool) -> Path:
    text = WRITERS[kind](comparison)
    with atomic_output(path, force) as tmp:
        tmp.write_text(text)
    return path
