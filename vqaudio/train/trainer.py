"""The one training loop. Every model (VQ-VAE, priors, image models) plugs in through `TrainSetup`.

A model only has to provide `training_step(batch) -> (loss, metrics)`. The loop owns the
optimiser, learning-rate schedule, device placement, autocast, logging, validation,
checkpoints, resumption and graceful interruption.
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from torch import nn

from vqaudio.errors import TrainingInterrupted, VQAudioError
from vqaudio.recipe import Recipe, TrainConfig
from vqaudio.train.checkpoint import (
    list_checkpoints,
    model_fingerprint,
    save_checkpoint,
)
from vqaudio.train.metrics_log import MetricsLog

Batch = dict[str, torch.Tensor]


@dataclass
class TrainSetup:
    """What a task hands to the loop."""

    kind: str
    model: nn.Module
    train_batch: Callable[[int], Batch]  # step -> batch; deterministic in the step so resuming is exact
    valid_batches: Callable[[], Iterable[Batch]]
    metadata: dict[str, Any] = field(default_factory=dict)  # saved in every checkpoint (speakers, rates...)


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    checkpoint: Path
    last_valid: dict[str, float]


def _schedule(config: TrainConfig) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if config.warmup_steps and step < config.warmup_steps:
            return (step + 1) / config.warmup_steps
        if config.lr_schedule == "cosine":
            span = max(1, config.steps - config.warmup_steps)
            return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - config.warmup_steps) / span)))
        return 1.0

    return factor


class _StopRequest:
    """Turns the first Ctrl-C / SIGTERM into a flag checked between steps (a second Ctrl-C aborts)."""

    def __init__(self) -> None:
        self.signal_name: str | None = None
        self._previous: dict[int, Any] = {}

    def _handler(self, signum: int, frame: Any) -> None:
        if self.signal_name is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal_name = signal.Signals(signum).name

    def __enter__(self) -> _StopRequest:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _to_device(batch: Batch, device: torch.device) -> Batch:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


Metrics = dict[str, float | torch.Tensor]


def _detach(metrics: dict[str, torch.Tensor]) -> Metrics:
    """Scalars become floats; vectors (histograms such as code counts) stay tensors on the CPU."""
    return {k: (v.detach().float().cpu() if torch.is_tensor(v) and v.dim() > 0 else float(v)) for k, v in metrics.items()}


def _combine(values: list[Metrics]) -> Metrics:
    """Average scalars over steps; sum vectors (histograms add up over batches)."""
    out: Metrics = {}
    for key in values[0]:
        items = [v[key] for v in values]
        out[key] = sum(items) if torch.is_tensor(items[0]) else sum(items) / len(items)
    return out


class Trainer:
    def __init__(
        self,
        setup: TrainSetup,
        recipe: Recipe,
        run_dir: Path,
        device: torch.device,
        console: Console | None = None,
        show_progress: bool = True,
    ) -> None:
        self.setup = setup
        self.recipe = recipe
        self.config = recipe.train
        self.run_dir = run_dir
        self.device = device
        self.console = console or Console(stderr=True)
        self.show_progress = show_progress
        self.model = setup.model.to(device)
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(params, lr=self.config.lr)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, _schedule(self.config))
        self.step = 0
        self.last_valid: dict[str, float] = {}
        self.autocast = device.type == "cuda"
        self.metrics_log = MetricsLog(run_dir, self.config.tensorboard)

    # ----- state -----

    def state(self) -> dict[str, Any]:
        model_state = {k: v.detach().cpu() for k, v in self.model.state_dict().items()}
        rng = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        return {
            "kind": self.setup.kind,
            "recipe": self.recipe.to_dict(),
            "step": self.step,
            "model": model_state,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": rng,
            "fingerprint": model_fingerprint(model_state),
            "metadata": self.setup.metadata,
            "valid": self.last_valid,
        }

    def load_state(self, payload: dict[str, Any]) -> None:
        """Continue exactly where a checkpoint stopped: weights, optimiser, schedule, step, RNG."""
        self.model.load_state_dict(payload["model"])
        self.optimizer.load_state_dict(payload["optimizer"])
        self.scheduler.load_state_dict(payload["scheduler"])
        self.step = int(payload["step"])
        self.last_valid = dict(payload.get("valid") or {})
        torch.set_rng_state(payload["rng"]["torch"])
        if "cuda" in payload["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(payload["rng"]["cuda"])

    def save(self) -> Path:
        path = self.run_dir / "checkpoints" / f"step_{self.step:06d}.pt"
        save_checkpoint(path, self.state())
        for old in list_checkpoints(self.run_dir)[: -self.config.keep_checkpoints]:
            old.unlink(missing_ok=True)
        return path

    # ----- logging -----

    def _log(self, split: str, values: dict[str, float]) -> None:
        self.metrics_log.write(self.step, split, values)

    @staticmethod
    def _summary(values: dict[str, float]) -> str:
        order = ["loss", "nll", "commitment", "perplexity", "codes_used"]
        parts = [f"{k} {values[k]:.3g}" for k in order if k in values]
        return "  ".join(parts)

    # ----- the loop -----

    def _train_step(self) -> dict[str, float]:
        self.model.train()
        batch = _to_device(self.setup.train_batch(self.step), self.device)
        with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
            loss, metrics = self.model.training_step(batch)
        if not torch.isfinite(loss):
            raise VQAudioError(
                f"training diverged: the loss became {loss.item()} at step {self.step} of {self.run_dir}; "
                "lower train.lr, or resume from its last checkpoint"
            )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.config.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        return _detach(metrics)

    def _summarize(self, values: Metrics) -> dict[str, float]:
        """Plain numbers for the log: the model may turn summed histograms into usage figures."""
        hook = getattr(self.model, "summarize_metrics", None)
        if hook is not None:
            return hook(values)
        return {k: float(v) for k, v in values.items() if not torch.is_tensor(v)}

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        self.model.eval()
        results = []
        for batch in self.setup.valid_batches():
            batch = _to_device(batch, self.device)
            with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
                _, metrics = self.model.training_step(batch)
            results.append(_detach(metrics))
        return self._summarize(_combine(results)) if results else {}

    def run(self) -> TrainResult:
        """Train to `train.steps`; on Ctrl-C or SIGTERM, checkpoint and raise TrainingInterrupted."""
        cfg = self.config
        columns = [
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[summary]}"),
        ]
        window: list[dict[str, float]] = []
        checkpoint = None
        with contextlib.closing(self.metrics_log), _StopRequest() as stop, Progress(
            *columns, console=self.console, disable=not self.show_progress, transient=False
        ) as progress:
            task = progress.add_task("train", total=cfg.steps, completed=self.step, summary="")
            while self.step < cfg.steps:
                window.append(self._train_step())
                progress.update(task, completed=self.step)
                last = self.step == cfg.steps
                if self.step % cfg.log_every == 0 or last:
                    values = {**self._summarize(_combine(window)), "lr": self.scheduler.get_last_lr()[0]}
                    window = []
                    self._log("train", values)
                    progress.update(task, summary=self._summary(values))
                if self.step % cfg.valid_every == 0 or last:
                    progress.update(task, description="valid")
                    self.last_valid = self.validate()
                    if self.last_valid:
                        self._log("valid", self.last_valid)
                    progress.update(task, description="train")
                if self.step % cfg.checkpoint_every == 0 or last:
                    checkpoint = self.save()
                if stop.signal_name is not None:
                    checkpoint = self.save()
                    raise TrainingInterrupted(
                        f"{stop.signal_name} at step {self.step}: saved {checkpoint}; "
                        f"continue with: vqaudio train --resume {self.run_dir}"
                    )
        if checkpoint is None:  # resumed a run that had already finished
            checkpoint = list_checkpoints(self.run_dir)[-1]
        return TrainResult(self.run_dir, self.step, checkpoint, self.last_valid)
