"""Run directories: `runs/<recipe-name>/<timestamp>/` with `recipe.yaml`, `run.json`,
`metrics.jsonl` and `checkpoints/`; `runs/latest` points at the newest run."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import yaml

from vqaudio.errors import VQAudioError
from vqaudio.train.checkpoint import list_checkpoints


def create_run_dir(runs_dir: Path, name: str, info: dict[str, Any]) -> Path:
    """Make a fresh timestamped run folder and write `run.json`."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = runs_dir / name
    run = base / stamp
    suffix = 1
    while run.exists():
        suffix += 1
        run = base / f"{stamp}-{suffix}"
    (run / "checkpoints").mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({"name": name, "created": stamp, **info}, indent=2) + "\n")
    return run


def point_latest(runs_dir: Path, run: Path) -> None:
    """Atomically repoint `runs/latest` (a relative symlink) at `run`."""
    link = runs_dir / "latest"
    tmp = runs_dir / f".latest.{os.getpid()}"
    tmp.unlink(missing_ok=True)
    try:
        os.symlink(os.path.relpath(run, runs_dir), tmp)
        os.replace(tmp, link)
    except OSError:
        tmp.unlink(missing_ok=True)  # file systems without symlinks: runs/latest is a convenience only


def run_kind(run: Path) -> str | None:
    try:
        return json.loads((run / "run.json").read_text()).get("kind")
    except (OSError, ValueError):
        return None


EXAMPLE_RECIPES = {
    "audio_vqvae": "recipes/demo.yaml",
    "code_prior": "recipes/demo_prior.yaml",
    "image_vqvae": "recipes/cifar10_cpu.yaml",
    "image_vae": "recipes/cifar10_vae_cpu.yaml",
    "image_prior": "recipes/cifar10_prior_cpu.yaml",
}


def is_two_level(run: Path) -> bool:
    """Whether a run trains a two-level audio model (its recipe has model.top)."""
    try:
        recipe = yaml.safe_load((run / "recipe.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError):
        return False
    return isinstance(recipe, dict) and bool((recipe.get("model") or {}).get("top"))


def newest_checkpoint(runs_dir: Path, kind: str, two_level: bool | None = None) -> Path:
    """The most recently written checkpoint of a run of `kind` under `runs_dir` (of a two-level
    or a one-level audio model only, when `two_level` says which)."""
    candidates = []
    if runs_dir.is_dir():
        for run_json in runs_dir.glob("*/*/run.json"):
            run = run_json.parent
            if run_kind(run) == kind and (two_level is None or is_two_level(run) == two_level):
                candidates += list_checkpoints(run)
    if not candidates:
        what = {None: "", True: "two-level ", False: "one-level "}[two_level]
        example = "recipes/demo_vqvae2.yaml" if two_level else EXAMPLE_RECIPES.get(kind, "recipes/demo.yaml")
        raise VQAudioError(
            f"no {what}{kind} checkpoint under {runs_dir}/; train one first (vqaudio train {example}) or pass -c CHECKPOINT"
        )
    return max(candidates, key=lambda p: p.stat().st_mtime_ns)


def newest_prior_at_level(runs_dir: Path, kind: str, level: str, vqvae_fingerprint: str) -> Path | None:
    """The newest checkpoint of a `kind` prior at `level` ("top" or "bottom") over the VQ-VAE with
    `vqvae_fingerprint`, under `runs_dir`; None when there is none. A two-level model's priors
    find their partner this way."""
    from vqaudio.train.checkpoint import load_checkpoint

    found = []
    for run_json in runs_dir.glob("*/*/run.json") if runs_dir.is_dir() else []:
        checkpoints = list_checkpoints(run_json.parent) if run_kind(run_json.parent) == kind else []
        if checkpoints:
            meta = load_checkpoint(checkpoints[-1]).get("metadata") or {}
            if meta.get("level") == level and meta.get("vqvae_fingerprint") == vqvae_fingerprint:
                found.append(checkpoints[-1])
    return max(found, key=lambda p: p.stat().st_mtime_ns) if found else None


def needs_bottom_prior(checkpoint: str | Path, level: str | None, bottom: str | Path | None) -> bool:
    """Whether the prior at `checkpoint` (of `level`) is a top prior that needs its bottom partner;
    one-line errors for a bottom prior given first, or --bottom beside a one-level prior."""
    if level == "bottom":
        raise VQAudioError(f"{checkpoint}: a bottom prior; give the top prior (-c) and this one with --bottom")
    if level is None and bottom is not None:
        raise VQAudioError(f"--bottom: {checkpoint} is a prior over one-level codes; there is no bottom level")
    return level == "top"


def runs_dir_of(checkpoint: Path) -> Path:
    """The runs folder a checkpoint's run sits in (runs/<name>/<run>/checkpoints/step_N.pt)."""
    return checkpoint.resolve().parents[3]


def resolve_run_dir(path: Path) -> Path:
    """Accept a run folder (or `runs/latest`) for --resume, with a clear error otherwise."""
    if not path.exists():
        raise VQAudioError(f"{path}: no such run folder")
    run = path.resolve()
    if not (run / "recipe.yaml").exists():
        raise VQAudioError(f"{path}: not a run folder (no recipe.yaml in it); give runs/<name>/<timestamp>")
    if not list_checkpoints(run):
        raise VQAudioError(f"{path}: the run has no checkpoint to resume from")
    return run
