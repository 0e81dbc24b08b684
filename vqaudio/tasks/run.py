"""Starting or resuming a training run from a recipe: the function `vqaudio train` calls.

It joins a task (which data, which model) to the loop (`vqaudio.train`), which knows no task."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

import torch
from rich.console import Console

from vqaudio.errors import VQAudioError
from vqaudio.formats.checkpoint import list_checkpoints, load_checkpoint
from vqaudio.recipe import (
    Recipe,
    apply_overrides,
    dump_recipe,
    read_yaml,
    validate_recipe,
)
from vqaudio.tasks import build_setup
from vqaudio.train.distributed import (
    Distributed,
    barrier,
    broadcast_text,
    distributed_job,
)
from vqaudio.train.loop import Trainer, TrainResult, ValidationHook
from vqaudio.train.metrics_log import check_tensorboard_available
from vqaudio.train.run_dir import create_run_dir, point_latest, resolve_run_dir


def resume_recipe(run_dir: Path, overrides: list[str]) -> Recipe:
    """The run's saved recipe; only `train.*` keys may be overridden (for example more steps)."""
    saved = read_yaml(resolve_run_dir(run_dir) / "recipe.yaml")
    data, touched = apply_overrides(saved, overrides)
    fixed = sorted(k for k in touched if not k.startswith("train."))
    if fixed:
        raise VQAudioError(f"--resume: {', '.join(fixed)} cannot change in a resumed run; only train.* keys can")
    return validate_recipe(data, str(run_dir / "recipe.yaml"), touched, saved=True)


def train(
    recipe: Recipe,
    device: torch.device,
    resume_dir: Path | None = None,
    show_progress: bool = True,
    console: Console | None = None,
    run_dir: Path | None = None,
    on_validation: ValidationHook | None = None,
) -> TrainResult:
    """Train `recipe` in a new run folder, or continue the run in `resume_dir`.

    `run_dir`: the new run's folder (default: a timestamped one under `train.runs_dir`); a sweep
    names its trials' folders so. `on_validation(step, values)` is called after every validation
    and may raise to stop the run there (a sweep's pruning). Only rank 0 validates, so a hook that
    raises is for one-process runs: under torchrun the other ranks would wait at the next step.

    Under torchrun every process calls this; they form one data-parallel job (see
    `vqaudio.train.distributed`) in which rank 0 alone writes the run folder.
    """
    console = console or Console(stderr=True)
    if recipe.train.tensorboard:
        check_tensorboard_available()
    with distributed_job(device) as (job, device):
        return _train(recipe, device, job, resume_dir, show_progress and job.is_main, console, run_dir, on_validation)


def _train(
    recipe: Recipe,
    device: torch.device,
    job: Distributed,
    resume_dir: Path | None,
    show_progress: bool,
    console: Console,
    named_dir: Path | None = None,
    on_validation: ValidationHook | None = None,
) -> TrainResult:
    if show_progress:
        from vqaudio.progress import preparation_bar

        bar = preparation_bar("prepare data")
    else:
        bar = nullcontext(None)
    if not job.is_main:
        barrier(job)  # rank 0 prepares (and caches) the data first; the others then read the cache
    with bar as on_progress:
        setup = build_setup(recipe, on_progress)
    if job.is_main:
        barrier(job)
    runs_dir = Path(recipe.train.runs_dir)
    if resume_dir is not None:
        run_dir = resolve_run_dir(resume_dir)
        checkpoint = list_checkpoints(run_dir)[-1]
        payload = load_checkpoint(checkpoint)
        if payload.get("kind") != setup.kind:
            raise VQAudioError(f"{checkpoint}: a {payload.get('kind')} checkpoint cannot resume a {setup.kind} run")
        trainer = Trainer(setup, recipe, run_dir, device, console, show_progress, job, on_validation)
        trainer.load_state(payload)
        if job.is_main:
            console.print(f"resuming {run_dir} from step {trainer.step}")
            for leftover in (run_dir / "checkpoints").glob(".step_*.tmp"):
                leftover.unlink(missing_ok=True)  # a write that was killed part-way (the real file is intact)
    else:
        created = create_run_dir(runs_dir, recipe.name, {"kind": setup.kind}, named_dir) if job.is_main else None
        run_dir = Path(broadcast_text(job, str(created) if created else None, device))
        trainer = Trainer(setup, recipe, run_dir, device, console, show_progress, job, on_validation)
        if job.is_main:
            where = f"{job.world_size} processes on {device.type}" if job.enabled else f"device {device}"
            console.print(f"run folder: {run_dir}  ({where})")
    if job.is_main:
        (run_dir / "recipe.yaml").write_text(dump_recipe(recipe))
        if run_dir.resolve().parent != runs_dir.resolve():  # runs/latest is for runs/<name>/<stamp>; a sweep's trials sit in its folder
            point_latest(runs_dir, run_dir)
    return trainer.run()
