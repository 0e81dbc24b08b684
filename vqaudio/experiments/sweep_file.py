"""Sweep files: a base recipe, fixed overrides, a search space over recipe keys, seeds, a trial
count and an objective from the eval metrics. `load_sweep` validates all of it up front, so a
malformed sweep fails in one line that names the key, before any trial trains.

    recipe: recipes/demo.yaml             # relative to the working folder, then to the sweep file
    overrides: {train.steps: 600}         # every trial
    space:
      model.quantizer.codebook_size: [256, 512, 1024]          # a list: grid axis (categorical otherwise)
      model.quantizer.beta: {low: 0.1, high: 1.0, log: true}   # a range: random or TPE search
    seeds: [0, 1]
    sampler: grid                         # grid | random | tpe (default: grid if the space is all lists)
    trials: 8                             # random and tpe; a grid runs every point once per seed
    objective: {pesq_wb: maximize}        # an eval metric, or valid.<name> (the last validation)
    eval: {data: null, max_clips: 8}      # eval --data (default: each model's held-out clips)
    pruning: median                       # on the validation loss (Optuna's median pruner); none by default
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from vqaudio.errors import VQAudioError
from vqaudio.evaluation.evaluate import METRICS
from vqaudio.recipe import Recipe, apply_overrides, read_yaml, validate_recipe

Direction = Literal["maximize", "minimize"]
VALID_PREFIX = "valid."  # objective on the last validation pass instead of an eval metric


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Range(_Strict):
    """A numeric range. Integer bounds (`low: 1`) give integers; write `1.0` for a float range."""

    low: float | int
    high: float | int
    log: bool = False
    step: float | int | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError("a log range needs low > 0")
        if self.log and self.step is not None:
            raise ValueError("give log or step, not both")
        return self

    @property
    def integer(self) -> bool:
        return isinstance(self.low, int) and isinstance(self.high, int) and not isinstance(self.step, float)


class EvalSpec(_Strict):
    data: str | None = None  # as `vqaudio eval --data`; default each trial's held-out clips
    max_clips: int | None = Field(8, ge=1)
    metrics: list[str] | None = None  # default: the objective's metric with pesq_wb, stoi and log_mel_distance
    temperature: float = Field(1.0, ge=0)  # the WaveNet decoder's sampling temperature
    each_n_q: bool = True  # residual models: also evaluate 1 .. n_q-1 codebooks (the rate-quality curve)
    baselines: bool = True  # Opus and Codec2 on the same clips, once per sweep (baselines.json)


class Pruning(_Strict):
    kind: Literal["median", "none"] = "median"
    metric: str = "loss"  # a validation quantity; lower is better
    startup_trials: int = Field(2, ge=0)  # no pruning until this many trials have finished
    warmup_steps: int = Field(0, ge=0)  # nor before this step of a trial


class SweepSpec(_Strict):
    recipe: str
    name: str | None = Field(None, pattern=r"^[A-Za-z0-9_.-]+$")
    overrides: dict[str, Any] = {}
    space: dict[str, list[Any] | Range] = {}
    seeds: list[int] | None = Field(None, min_length=1)  # default: the recipe's seed
    sampler: Literal["grid", "random", "tpe"] | None = None
    sampler_seed: int = 0
    trials: int | None = Field(None, ge=1)
    objective: dict[str, Direction]
    eval: EvalSpec = EvalSpec()
    pruning: Pruning | Literal["median", "none"] = "none"
    runs_dir: str = "runs"

    @field_validator("space")
    @classmethod
    def _lists_not_empty(cls, space: dict[str, Any]) -> dict[str, Any]:
        for key, values in space.items():
            if isinstance(values, list) and not values:
                raise ValueError(f"{key}: an empty list of values")
            if key == "seed":
                raise ValueError("seed: list seeds under `seeds`, not in the space")
        return space

    @field_validator("objective")
    @classmethod
    def _one_objective(cls, objective: dict[str, str]) -> dict[str, str]:
        if len(objective) != 1:
            raise ValueError("name exactly one metric, for example {pesq_wb: maximize}")
        (metric,) = objective
        if not metric.startswith(VALID_PREFIX) and metric not in METRICS:
            raise ValueError(f"unknown metric {metric!r}; choose an eval metric ({', '.join(METRICS)}) or valid.<name>")
        return objective


@dataclass(frozen=True)
class Sweep:
    """A validated sweep file."""

    path: Path
    name: str
    recipe_path: Path
    spec: SweepSpec
    base: Recipe  # the base recipe with the fixed overrides

    @property
    def sampler(self) -> str:
        return self.spec.sampler or ("grid" if all(isinstance(v, list) for v in self.spec.space.values()) else "tpe")

    @property
    def seeds(self) -> list[int]:
        return self.spec.seeds or [self.base.seed]

    @property
    def metric(self) -> str:
        return next(iter(self.spec.objective))

    @property
    def direction(self) -> Direction:
        return next(iter(self.spec.objective.values()))

    @property
    def pruning(self) -> Pruning:
        chosen = self.spec.pruning
        return chosen if isinstance(chosen, Pruning) else Pruning(kind=chosen)

    @property
    def folder(self) -> Path:
        return Path(self.spec.runs_dir) / self.name

    @property
    def trials(self) -> int:
        """How many trials the sweep runs: the given count (a grid: at most its points x seeds)."""
        if self.sampler == "grid":
            points = len(self.grid())
            return min(points, self.spec.trials) if self.spec.trials else points
        assert self.spec.trials is not None
        return self.spec.trials

    def grid(self) -> list[dict[str, Any]]:
        """Every point of a grid sweep, seeds last: the parameters of each trial in order."""
        keys = list(self.spec.space)
        values = [self.spec.space[k] for k in keys]
        return [dict(zip([*keys, "seed"], combo, strict=True)) for combo in itertools.product(*values, self.seeds)]  # type: ignore[arg-type]

    def overrides(self, params: dict[str, Any]) -> list[str]:
        """KEY=VALUE overrides for one trial: the fixed ones, then the trial's parameters."""
        return [f"{key}={json.dumps(value)}" for key, value in {**self.spec.overrides, **params}.items()]

    def eval_metrics(self) -> list[str]:
        chosen = self.spec.eval.metrics or ["pesq_wb", "stoi", "log_mel_distance"]
        if not self.metric.startswith(VALID_PREFIX) and self.metric not in chosen:
            chosen = [self.metric, *chosen]
        return chosen


def _locate(sweep_path: Path, recipe: str) -> Path:
    given = Path(recipe)
    for candidate in (given, sweep_path.parent / given):
        if candidate.is_file():
            return candidate
    raise VQAudioError(f"{sweep_path}: recipe: no such file {recipe!r} (looked in the working folder and beside the sweep file)")


def _where(error: dict[str, Any]) -> str:
    return ".".join(str(p) for p in error["loc"] if not str(p).startswith(("list[", "Range", "function-")))


def load_sweep(path: str | Path) -> Sweep:
    """Read and check a sweep file: its keys, its space, and that every trial's recipe validates."""
    path = Path(path)
    if not path.is_file():
        raise VQAudioError(f"{path}: no such sweep file")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError:
        raise VQAudioError(f"{path}: not valid YAML; check the indentation and colons") from None
    if not isinstance(data, dict):
        raise VQAudioError(f"{path}: a sweep file must be a YAML mapping (recipe, space, objective, ...)")
    try:
        spec = SweepSpec.model_validate(data)
    except ValidationError as exc:
        mismatch = ("list_type", "model_type", "model_attributes_type", "dict_type", "literal_error")
        errors = sorted(exc.errors(), key=lambda e: (e["type"] in mismatch, len(e["loc"])))  # a union's other branches last
        error = errors[0]
        where = _where(error)
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown key"
        elif error["type"] == "missing":
            message = "missing"
        raise VQAudioError(f"{path}: {where}: {message}") from None
    sampler = spec.sampler or ("grid" if all(isinstance(v, list) for v in spec.space.values()) else "tpe")
    if sampler == "grid" and any(not isinstance(v, list) for v in spec.space.values()):
        key = next(k for k, v in spec.space.items() if not isinstance(v, list))
        raise VQAudioError(f"{path}: space.{key}: a grid needs a list of values; use sampler: random or tpe for a range")
    if sampler != "grid" and spec.trials is None:
        raise VQAudioError(f"{path}: trials: a {sampler} sweep needs a number of trials")
    recipe_path = _locate(path, spec.recipe)
    raw = read_yaml(recipe_path)
    fixed = [f"{k}={json.dumps(v)}" for k, v in spec.overrides.items()]
    base = _validated(raw, fixed, recipe_path, path, "overrides")
    name = spec.name or path.stem
    sweep = Sweep(path, name, recipe_path, spec, base)
    for point in _points_to_check(spec.space, sampler):  # every trial's recipe must validate (a range: both ends)
        shown = ", ".join(f"{k}={json.dumps(v)}" for k, v in point.items())
        _validated(raw, [*fixed, *(f"{k}={json.dumps(v)}" for k, v in point.items())], recipe_path, path, f"space ({shown})")
    return sweep


MAX_CHECKED = 4096


def _points_to_check(space: dict[str, list[Any] | Range], sampler: str) -> list[dict[str, Any]]:
    """A grid's points (up to MAX_CHECKED); otherwise the first values with one key at a time at each of its values."""
    choices = {k: v if isinstance(v, list) else [v.low, v.high] for k, v in space.items()}
    if sampler == "grid":
        combos = itertools.islice(itertools.product(*choices.values()), MAX_CHECKED)
        return [dict(zip(choices, combo, strict=True)) for combo in combos]
    first = {k: v[0] for k, v in choices.items()}
    return [first] + [{**first, key: value} for key, values in choices.items() for value in values[1:]]


def _validated(raw: dict[str, Any], overrides: list[str], recipe_path: Path, sweep_path: Path, section: str) -> Recipe:
    try:
        data, touched = apply_overrides(raw, overrides)
        return validate_recipe(data, str(recipe_path), touched)
    except VQAudioError as exc:
        raise VQAudioError(f"{sweep_path}: {section}: {exc}") from None
