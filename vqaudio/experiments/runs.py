"""What a finished (or unfinished) run folder says about itself, read without loading its model:
the recipe, the logged curves, the last validation, and every eval report written into it
(`eval.json`, `eval_nq<k>.json`, or any `eval*.json`). A sweep's trials add `trial.json`.

Arguments name run folders or folders that hold runs (a sweep folder, `runs/<recipe>/`, `runs/`)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from vqaudio.errors import VQAudioError
from vqaudio.evaluation.evaluate import MODEL_SYSTEM, ORIGINAL_SYSTEM, REPORT_FORMAT

SWEEP_FILE = "sweep.json"
TRIAL_FILE = "trial.json"
BASELINES_FILE = "baselines.json"
IGNORED_KEYS = {"train.runs_dir"}  # where a run was written says nothing about it


@dataclass(frozen=True)
class EvalPoint:
    """One system of one eval report: its bitrate and its metric means."""

    name: str
    bitrate: float | None
    n_q: int | None
    metrics: dict[str, float]
    source: Path


@dataclass
class RunRecord:
    folder: Path
    label: str  # how tables and legends name it: the path below the common root
    recipe: dict[str, Any]  # flattened: dotted keys
    curves: list[dict[str, Any]]
    evals: list[EvalPoint] = field(default_factory=list)  # the model's, one per report
    baselines: list[EvalPoint] = field(default_factory=list)  # Opus and Codec2 rows found beside it
    trial: dict[str, Any] | None = None  # a sweep trial's trial.json

    @property
    def step(self) -> int | None:
        steps = [r["step"] for r in self.curves if "step" in r]
        return max(steps) if steps else None

    @property
    def last_valid(self) -> dict[str, float]:
        valid = [r for r in self.curves if r.get("split") == "valid"]
        return {k: v for k, v in valid[-1].items() if k not in ("step", "split", "time")} if valid else {}

    @property
    def train_seconds(self) -> float | None:
        times = [r["time"] for r in self.curves if isinstance(r.get("time"), (int, float))]
        return max(times) - min(times) if len(times) > 1 else None

    @property
    def state(self) -> str:
        if self.trial is not None:
            return str(self.trial.get("state", "running"))
        return "evaluated" if self.evals else "trained"

    @property
    def full(self) -> EvalPoint | None:
        """The report at the model's full rate (every codebook): the one the run is judged by."""
        if not self.evals:
            return None
        named = [e for e in self.evals if e.source.name == "eval.json"]
        return named[0] if named else max(self.evals, key=lambda e: (e.n_q or 0, e.bitrate or 0))

    def metric(self, name: str) -> float | None:
        """An eval metric of the full-rate report, or `valid.<name>` from the last validation."""
        if name.startswith("valid."):
            return self.last_valid.get(name.removeprefix("valid."))
        full = self.full
        return full.metrics.get(name) if full else None


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        flat: dict[str, Any] = {}
        for key, value in data.items():
            flat.update(flatten(value, f"{prefix}{key}."))
        return flat
    return {prefix.rstrip("."): data}


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def report_points(report: dict[str, Any], source: Path) -> tuple[list[EvalPoint], list[EvalPoint]]:
    """An eval report's model rows and baseline rows."""
    model, baselines = [], []
    for system in report.get("systems") or []:
        if not isinstance(system, dict) or system.get("name") == ORIGINAL_SYSTEM:
            continue
        means = {k: v["mean"] for k, v in (system.get("summary") or {}).items() if isinstance(v, dict) and v.get("mean") is not None}
        rate = system.get("bitrate")
        point = EvalPoint(str(system.get("name")), float(rate) if rate else None, report.get("n_q"), means, source)
        (model if system.get("name") == MODEL_SYSTEM else baselines).append(point)
    return model, baselines


def read_run(folder: Path, label: str | None = None) -> RunRecord:
    recipe_file = folder / "recipe.yaml"
    try:
        recipe = yaml.safe_load(recipe_file.read_text()) or {}
    except (OSError, yaml.YAMLError):
        raise VQAudioError(f"{folder}: not a run folder (no readable recipe.yaml)") from None
    curves = []
    metrics = folder / "metrics.jsonl"
    if metrics.exists():
        for line in metrics.read_text().splitlines():
            try:
                curves.append(json.loads(line))
            except ValueError:
                continue  # a torn last line from a killed run
    record = RunRecord(folder, label or folder.name, {k: v for k, v in flatten(recipe).items() if k not in IGNORED_KEYS}, curves)
    for path in sorted(folder.glob("eval*.json")):
        report = _read_json(path)
        if report is None or report.get("format") != REPORT_FORMAT:
            continue
        model, baselines = report_points(report, path)
        record.evals += model
        record.baselines += baselines
    record.trial = _read_json(folder / TRIAL_FILE)
    if not record.baselines:
        sweep_baselines = _read_json(folder.parent / BASELINES_FILE)
        if sweep_baselines is not None:
            record.baselines = report_points(sweep_baselines, folder.parent / BASELINES_FILE)[1]
    return record


def find_runs(paths: list[Path]) -> list[RunRecord]:
    """Every run folder named, or held (two levels deep) in a folder named; in the order given."""
    folders: list[Path] = []
    for path in paths:
        if not path.exists():
            raise VQAudioError(f"{path}: no such run or sweep folder")
        if (path / "recipe.yaml").exists():
            found = [path]
        else:
            found = sorted(
                {
                    p.parent.resolve()
                    for pattern in ("*/recipe.yaml", "*/*/recipe.yaml")
                    for p in path.glob(pattern)
                    if "latest" not in p.relative_to(path).parts  # the runs/latest link repeats a run
                }
            )
            if not found:
                raise VQAudioError(f"{path}: holds no run folder (no recipe.yaml in it or below it)")
        folders += [f.resolve() for f in found if f.resolve() not in folders]
    root = _common_root(folders)
    return [read_run(f, str(f.relative_to(root)) if root and f != root else f.name) for f in folders]


def _common_root(folders: list[Path]) -> Path | None:
    if len(folders) < 2:
        return folders[0].parent if folders else None
    common = []
    for parts in zip(*(f.parts for f in folders), strict=False):
        if any(part != parts[0] for part in parts):
            break
        common.append(parts[0])
    return Path(*common) if common else None


def differing_keys(runs: list[RunRecord]) -> list[str]:
    """The recipe keys whose values are not the same in every run."""
    keys = sorted({k for run in runs for k in run.recipe})
    return [k for k in keys if len({json.dumps(run.recipe.get(k), sort_keys=True) for run in runs}) > 1]


def short_names(keys: list[str]) -> list[str]:
    """Each key's last part, unless another key shares it."""
    last = [k.rsplit(".", 1)[-1] for k in keys]
    return [part if last.count(part) == 1 else key for key, part in zip(keys, last, strict=True)]


def sweep_objective(paths: list[Path]) -> tuple[str, str] | None:
    """The objective (metric, direction) of the first sweep folder among `paths`, if any."""
    for path in paths:
        for candidate in (path / SWEEP_FILE, path.parent / SWEEP_FILE):
            data = _read_json(candidate)
            if data and data.get("metric") and data.get("direction") in ("maximize", "minimize"):
                return str(data["metric"]), str(data["direction"])
    return None
