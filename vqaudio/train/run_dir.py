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
from vqaudio.formats.checkpoint import list_checkpoints


def create_run_dir(runs_dir: Path, name: str, info: dict[str, Any], named: Path | None = None) -> Path:
    """Make a fresh timestamped run folder (or the folder `named`, which must hold no run yet) and write `run.json`."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    if named is not None:
        if (named / "run.json").exists():
            raise VQAudioError(f"{named}: already holds a run; continue it with vqaudio train --resume {named}")
        run = named
    else:
        base = runs_dir / name
        run = base / stamp
        suffix = 1
        while run.exists():
            suffix += 1
            run = base / f"{stamp}-{suffix}"
    (run / "checkpoints").mkdir(parents=True, exist_ok=named is not None)
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


def newest_checkpoint(runs_dir: Path, kinds: str | tuple[str, ...], two_level: bool | None = None) -> Path:
    """The most recently written checkpoint of a run of any of `kinds` under `runs_dir` (of a
    two-level or a one-level audio model only, when `two_level` says which)."""
    kinds = (kinds,) if isinstance(kinds, str) else kinds
    candidates = []
    if runs_dir.is_dir():
        for run_json in runs_dir.glob("*/*/run.json"):
            run = run_json.parent
            if run_kind(run) in kinds and (two_level is None or is_two_level(run) == two_level):
                candidates += list_checkpoints(run)
    if not candidates:
        what = {None: "", True: "two-level ", False: "one-level "}[two_level]
        example = "recipes/demo_vqvae2.yaml" if two_level else EXAMPLE_RECIPES.get(kinds[0], "recipes/demo.yaml")
        names = " or ".join(kinds)
        raise VQAudioError(
            f"no {what}{names} checkpoint under {runs_dir}/; train one first (vqaudio train {example}) or pass -c CHECKPOINT"
        )
    return max(candidates, key=lambda p: p.stat().st_mtime_ns)


def run_folders(runs_dir: Path, kind: str) -> list[Path]:
    """Every run folder of `kind` under `runs_dir` (runs/<name>/<run>/)."""
    if not runs_dir.is_dir():
        return []
    return sorted(run.parent for run in runs_dir.glob("*/*/run.json") if run_kind(run.parent) == kind)


def runs_dir_of(checkpoint: Path) -> Path:
    """The runs folder a checkpoint's run sits in (runs/<name>/<run>/checkpoints/step_N.pt); a
    one-line error for a checkpoint kept anywhere else."""
    resolved = checkpoint.resolve()
    parents = resolved.parents
    if len(parents) < 4 or parents[0].name != "checkpoints":
        raise VQAudioError(
            f"{checkpoint}: not inside a run folder (runs/<name>/<run>/checkpoints/), so its partner cannot be "
            "looked for beside it; pass it explicitly (--bottom)"
        )
    return parents[3]


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
