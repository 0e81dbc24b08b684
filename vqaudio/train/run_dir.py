"""Run directories: `runs/<recipe-name>/<timestamp>/` with `recipe.yaml`, `run.json`,
`metrics.jsonl` and `checkpoints/`; `runs/latest` points at the newest run."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

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


def newest_checkpoint(runs_dir: Path, kind: str) -> Path:
    """The most recently written checkpoint of a run of `kind` under `runs_dir`."""
    candidates = []
    if runs_dir.is_dir():
        for run_json in runs_dir.glob("*/*/run.json"):
            run = run_json.parent
            if run_kind(run) == kind:
                candidates += list_checkpoints(run)
    if not candidates:
        raise VQAudioError(
            f"no {kind} checkpoint under {runs_dir}/; train one first "
            f"(vqaudio train {EXAMPLE_RECIPES.get(kind, 'recipes/demo.yaml')}) or pass -c CHECKPOINT"
        )
    return max(candidates, key=lambda p: p.stat().st_mtime_ns)


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
