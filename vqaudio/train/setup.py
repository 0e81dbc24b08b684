"""What a task hands to the training loop, and how one optimiser step is taken.

A task supplies the model, a pure function from (step, shard) to a batch, the held-out batches
and the metadata saved in checkpoints. The model provides `training_step(batch) -> (loss,
metrics)`. How the model is updated is an `Optimization`: the default, `AdamStep`, is one Adam
optimiser with the recipe's schedule over `accumulate_batches` micro-batches; a task with, say, a
generator and discriminators supplies its own (`TrainSetup.optimization`) and the loop is unchanged.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from pydantic import BaseModel
from torch import nn

from vqaudio.recipe import TrainConfig

Batch = dict[str, torch.Tensor]
Metrics = dict[str, float | torch.Tensor]


@dataclass(frozen=True)
class Shard:
    """The part of a step's batch one call builds: the step draws `total` examples (deterministically
    from the seed and the step) and this call takes examples [start, stop)."""

    total: int
    start: int
    stop: int

    def take(self, items: Any) -> Any:
        return items[self.start : self.stop]


def detach(metrics: dict[str, torch.Tensor]) -> Metrics:
    """Scalars become floats; vectors (histograms such as code counts) stay tensors on the CPU."""
    return {k: (v.detach().float().cpu() if torch.is_tensor(v) and v.dim() > 0 else float(v)) for k, v in metrics.items()}


def combine(values: list[Metrics]) -> Metrics:
    """Average scalars over steps; sum vectors (histograms add up over batches)."""
    out: Metrics = {}
    for key in values[0]:
        items = [v[key] for v in values]
        out[key] = sum(items) if torch.is_tensor(items[0]) else sum(items) / len(items)
    return out


class MicroBatches(Protocol):
    """What the loop gives an `Optimization` for one step."""

    count: int  # micro-batches in this step

    def __iter__(self) -> Iterator[tuple[Batch, bool]]: ...  # (batch on the device, is it the last)

    def forward(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]: ...  # the training step, wrapped

    def sync(self, last: bool) -> contextlib.AbstractContextManager[Any]: ...  # DDP: gradients sync on the last only

    def agree(self, metrics: Metrics, finite: bool) -> tuple[Metrics, bool]: ...  # across ranks


class Optimization(Protocol):
    """How a model is updated; its state goes into every checkpoint."""

    def step(self, batches: MicroBatches) -> Metrics: ...

    def last_lr(self) -> float: ...

    def state_dict(self) -> dict[str, Any]: ...  # merged into the checkpoint's top level

    def load_state_dict(self, payload: dict[str, Any]) -> None: ...


class Diverged(Exception):
    """The loss became non-finite on some rank."""


def lr_factor(config: TrainConfig) -> Callable[[int], float]:
    """Linear warm-up, then constant or cosine decay to zero at `train.steps`."""

    def factor(step: int) -> float:
        if config.warmup_steps and step < config.warmup_steps:
            return (step + 1) / config.warmup_steps
        if config.lr_schedule == "cosine":
            span = max(1, config.steps - config.warmup_steps)
            return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - config.warmup_steps) / span)))
        return 1.0

    return factor


def accumulate(batches: MicroBatches) -> Metrics:
    """Forward and backward every micro-batch (gradients add up, each loss divided by their
    count); returns the metrics combined over micro-batches and ranks. Raises `Diverged` when a
    loss is non-finite on any rank."""
    results: list[Metrics] = []
    finite = True
    for batch, last in batches:
        with batches.sync(last):
            loss, metrics = batches.forward(batch)
            finite = finite and bool(torch.isfinite(loss.detach()))
            (loss / batches.count).backward()
        results.append(detach(metrics))
    combined, finite = batches.agree(combine(results), finite)
    if not finite:
        raise Diverged
    return combined


class AdamStep:
    """One Adam optimiser over every trainable parameter, the recipe's schedule, gradient
    accumulation over the micro-batches and gradient clipping."""

    def __init__(self, model: nn.Module, config: TrainConfig) -> None:
        self.model = model
        self.config = config
        params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(params, lr=config.lr)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_factor(config))
        # Modules that constrain their weights after every optimiser step (a pruned WaveNet's masks)
        self.constrained = [m for m in model.modules() if callable(getattr(m, "after_optimizer_step", None))]

    def step(self, batches: MicroBatches) -> Metrics:
        self.optimizer.zero_grad(set_to_none=True)
        combined = accumulate(batches)
        if self.config.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        for module in self.constrained:  # the scheduler has counted the steps taken, resumed runs included
            module.after_optimizer_step(self.scheduler.last_epoch)
        return combined

    def last_lr(self) -> float:
        return self.scheduler.get_last_lr()[0]

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()}

    def load_state_dict(self, payload: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(payload["optimizer"])
        self.scheduler.load_state_dict(payload["scheduler"])


@dataclass
class TrainSetup:
    """What a task hands to the loop."""

    kind: str
    model: nn.Module
    train_batch: Callable[[int, Shard], Batch]  # (step, shard) -> batch; a pure function, so resuming is exact
    valid_batches: Callable[[], Iterable[Batch]]
    metadata: BaseModel  # the typed record saved in every checkpoint (vqaudio.formats.metadata)
    optimization: Callable[[nn.Module, TrainConfig], Optimization] = AdamStep
    # Modules trained beside the model but not part of it (a conv decoder's discriminators): the
    # loop places them on the device and passes them to `model.training_step(batch, critic)`;
    # the `optimization` saves their weights. None for most models.
    critic: nn.Module | None = None
