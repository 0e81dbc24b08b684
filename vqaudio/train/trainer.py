"""The one training loop. Every model (VQ-VAE, priors, image models) plugs in through `TrainSetup`.

A model only has to provide `training_step(batch) -> (loss, metrics)`. The loop owns the
optimiser, learning-rate schedule, device placement, autocast, gradient accumulation,
torch.compile, data-parallel training (DDP under torchrun), logging, validation, checkpoints,
resumption and graceful interruption.

Batches are a pure function of (seed, step): each step draws a global batch of
batch_size x accumulate_batches x world_size examples and every (micro-batch, rank) pair builds
only its own slice. So a 2-process run sees exactly the batch a 1-process run with twice the
batch size sees, and a resumed run continues with exactly the data it would have had.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import math
import signal
import threading
import time
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
from torch.nn.parallel import DistributedDataParallel

from vqaudio.errors import TrainingInterrupted, VQAudioError
from vqaudio.recipe import Recipe, TrainConfig
from vqaudio.train import distributed as dist_utils
from vqaudio.train.distributed import SINGLE, Distributed
from vqaudio.train.checkpoint import (
    list_checkpoints,
    model_fingerprint,
    save_checkpoint,
)
from vqaudio.train.metrics_log import MetricsLog

Batch = dict[str, torch.Tensor]


@dataclass(frozen=True)
class Shard:
    """The part of a step's batch one call builds: the step draws `total` examples (deterministically
    from the seed and the step) and this call takes examples [start, stop)."""

    total: int
    start: int
    stop: int

    def take(self, items: Any) -> Any:
        return items[self.start : self.stop]


@dataclass
class TrainSetup:
    """What a task hands to the loop."""

    kind: str
    model: nn.Module
    train_batch: Callable[[int, Shard], Batch]  # (step, shard) -> batch; a pure function, so resuming is exact
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
    """Turns the first Ctrl-C / SIGTERM into a flag checked between steps. A second Ctrl-C aborts,
    unless it comes within `GRACE` seconds: torchrun forwards the terminal's Ctrl-C to its workers,
    so each worker sees it twice, and that must still end in a checkpoint."""

    GRACE = 3.0

    def __init__(self) -> None:
        self.signal_name: str | None = None
        self._when = 0.0
        self._previous: dict[int, Any] = {}

    def _handler(self, signum: int, frame: Any) -> None:
        if self.signal_name is not None:
            if signum == signal.SIGINT and time.monotonic() - self._when > self.GRACE:
                raise KeyboardInterrupt
            return
        self.signal_name = signal.Signals(signum).name
        self._when = time.monotonic()

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


class _StepModule(nn.Module):
    """`forward` runs the model's training step: DDP synchronises gradients only for work done
    through `forward`, and torch.compile compiles `forward`."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return self.model.training_step(batch)


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """bf16 for `precision: bf16`, and for `auto` on a CUDA GPU that supports it; None means fp32."""
    if precision == "bf16":
        return torch.bfloat16
    if precision == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None


class _NullLog:
    """What ranks other than 0 log to: nothing."""

    def write(self, step: int, split: str, values: dict[str, float]) -> None:
        pass

    def close(self) -> None:
        pass


class Trainer:
    def __init__(
        self,
        setup: TrainSetup,
        recipe: Recipe,
        run_dir: Path,
        device: torch.device,
        console: Console | None = None,
        show_progress: bool = True,
        job: Distributed = SINGLE,
    ) -> None:
        self.setup = setup
        self.recipe = recipe
        self.config = recipe.train
        self.run_dir = run_dir
        self.device = device
        self.job = job
        self.console = console or Console(stderr=True)
        self.show_progress = show_progress and job.is_main
        self.model = setup.model.to(device)
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(params, lr=self.config.lr)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, _schedule(self.config))
        self.step = 0
        self.last_valid: dict[str, float] = {}
        self.autocast_dtype = autocast_dtype(self.config.precision, device)
        self.metrics_log: MetricsLog | _NullLog = MetricsLog(run_dir, self.config.tensorboard) if job.is_main else _NullLog()
        self.step_module: nn.Module = _StepModule(self.model)
        if job.enabled:
            self.step_module = self._data_parallel()
            if job.rank:  # rank 0 keeps the recipe's stream; the others draw their own noise
                torch.manual_seed(recipe.seed * 1_000_003 + job.rank)
        self.forward = torch.compile(self.step_module) if self.config.compile else self.step_module

    def _data_parallel(self) -> DistributedDataParallel:
        """Wrap the step in DDP. Buffers are not synchronised in forward: the quantiser keeps its
        codebook identical on every rank by summing its statistics (the fingerprints compared at
        each checkpoint check that), and a broadcast would hide a rank that drifted."""
        options: dict[str, Any] = {
            "device_ids": [self.device.index] if self.device.type == "cuda" else None,
            "find_unused_parameters": self._has_unused_parameters(),
        }
        if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters:
            options["forward_sync_buffers"] = False  # still syncs once at start: every rank begins equal
        else:
            options["broadcast_buffers"] = False
        return DistributedDataParallel(self.step_module, **options)

    def _has_unused_parameters(self) -> bool:
        """Whether some parameter gets no gradient (the PixelCNN's last vertical layer, say), found by
        one step on a copy of the model. DDP must then look for them after every backward pass,
        which costs a graph traversal, so it is only asked to when needed. The RNG is restored."""
        rng = torch.get_rng_state()
        probe = copy.deepcopy(self.model).train()
        shard = Shard(self.config.batch_size * self.job.world_size, 0, self.config.batch_size)
        with self._autocast():
            loss, _ = probe.training_step(_to_device(self.setup.train_batch(0, shard), self.device))
        loss.backward()
        torch.set_rng_state(rng)
        return any(p.grad is None for p in probe.parameters() if p.requires_grad)

    # ----- state -----

    def _rng_state(self) -> dict[str, Any]:
        rng: dict[str, Any] = {"torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        return rng

    def state(self, rank_rng: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        model_state = {k: v.detach().cpu() for k, v in self.model.state_dict().items()}
        return {
            "kind": self.setup.kind,
            "recipe": self.recipe.to_dict(),
            "step": self.step,
            "model": model_state,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": {**self._rng_state(), **({"ranks": rank_rng} if rank_rng else {})},
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
        rng = payload["rng"]
        ranks = rng.get("ranks") or []
        if len(ranks) == self.job.world_size:
            rng = ranks[self.job.rank]  # the same job shape: every rank continues its own stream
        elif self.job.rank:  # another shape: fresh per-rank noise, seeded by rank and step
            torch.manual_seed((self.recipe.seed * 1_000_003 + self.job.rank) * 1_000_003 + self.step)
            return
        torch.set_rng_state(rng["torch"])
        if "cuda" in rng and self.device.type == "cuda":
            cuda_state = rng["cuda"]
            if isinstance(cuda_state, list):  # written by an older vqaudio: one state per GPU
                cuda_state = cuda_state[0]
            torch.cuda.set_rng_state(cuda_state, self.device)

    def _gather_rng(self) -> list[dict[str, Any]] | None:
        """Every rank's RNG state, on rank 0 (None for one process)."""
        if not self.job.enabled:
            return None
        import torch.distributed as dist

        mine = self._rng_state()
        gathered: list[dict[str, Any]] = [{} for _ in range(self.job.world_size)]
        for key in sorted(mine):
            local = mine[key].to(self.device)
            parts = [torch.empty_like(local) for _ in range(self.job.world_size)]
            dist.all_gather(parts, local)
            for rank, part in enumerate(parts):
                gathered[rank][key] = part.cpu()
        return gathered

    def save(self) -> Path:
        """Write a checkpoint (rank 0). Under DDP every rank joins: the ranks' model fingerprints
        are compared (a codebook that drifted apart is reported) and their RNG states kept."""
        path = self.run_dir / "checkpoints" / f"step_{self.step:06d}.pt"
        rank_rng = self._gather_rng()
        state = self.state(rank_rng) if self.job.is_main else None
        if self.job.enabled:
            mine = model_fingerprint({k: v.detach().cpu() for k, v in self.model.state_dict().items()})
            prints = [f"{v & (2**64 - 1):016x}" for v in dist_utils.all_ranks(self.job, _signed64(mine), self.device)]
            if state is not None:
                state["rank_fingerprints"] = prints
                if len(set(prints)) > 1:
                    self.console.print(f"[bold red]warning:[/] the ranks' models differ at step {self.step}: {prints}")
        if state is not None:
            save_checkpoint(path, state)
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

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)

    def _train_step(self, stop: _StopRequest | None = None) -> tuple[Metrics, bool]:
        """One optimiser step over `accumulate_batches` micro-batches; returns its metrics and
        whether any rank was asked to stop (every rank must agree, or the others would hang)."""
        self.model.train()
        cfg, job = self.config, self.job
        micro = cfg.accumulate_batches
        shard_size = cfg.batch_size
        total = shard_size * micro * job.world_size
        self.optimizer.zero_grad(set_to_none=True)
        results: list[Metrics] = []
        finite = True
        for index in range(micro):
            part = index * job.world_size + job.rank
            shard = Shard(total, part * shard_size, (part + 1) * shard_size)
            batch = _to_device(self.setup.train_batch(self.step, shard), self.device)
            last = index == micro - 1
            no_sync = self.step_module.no_sync() if job.enabled and not last else contextlib.nullcontext()
            with no_sync:
                with self._autocast():
                    loss, metrics = self.forward(batch)
                finite = finite and bool(torch.isfinite(loss.detach()))
                (loss / micro).backward()
            results.append(_detach(metrics))
        combined = _combine(results)
        combined, stopping, finite = self._agree(combined, stop, finite)
        if not finite:
            raise VQAudioError(
                f"training diverged: the loss became non-finite at step {self.step} of {self.run_dir}; "
                "lower train.lr, or resume from its last checkpoint"
            )
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        return combined, stopping

    def _agree(self, metrics: Metrics, stop: _StopRequest | None, finite: bool) -> tuple[Metrics, bool, bool]:
        """Average the scalar metrics over ranks and combine the stop and divergence flags, in one
        small all-reduce. Histograms (code counts) are already sums over ranks."""
        stopping = stop is not None and stop.signal_name is not None
        if not self.job.enabled:
            return metrics, stopping, finite
        scalars = [k for k, v in metrics.items() if not torch.is_tensor(v)]
        values = torch.tensor(
            [float(stopping), float(not finite)] + [float(metrics[k]) if finite else 0.0 for k in scalars],
            dtype=torch.float64,
            device=self.device,
        )
        values = dist_utils.reduce_step(self.job, values).cpu()
        averaged = {k: float(values[2 + i]) / self.job.world_size for i, k in enumerate(scalars)}
        return {**metrics, **averaged}, bool(values[0] > 0), bool(values[1] == 0)

    def _summarize(self, values: Metrics) -> dict[str, float]:
        """Plain numbers for the log: the model may turn summed histograms into usage figures."""
        hook = getattr(self.model, "summarize_metrics", None)
        if hook is not None:
            return hook(values)
        return {k: float(v) for k, v in values.items() if not torch.is_tensor(v)}

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Held-out metrics (rank 0 computes them; the other ranks wait at the next step)."""
        self.model.eval()
        results = []
        for batch in self.setup.valid_batches():
            batch = _to_device(batch, self.device)
            with self._autocast():
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
        window: list[Metrics] = []
        checkpoint = None
        with contextlib.closing(self.metrics_log), _StopRequest() as stop, Progress(
            *columns, console=self.console, disable=not self.show_progress, transient=False
        ) as progress:
            task = progress.add_task("train", total=cfg.steps, completed=self.step, summary="")
            while self.step < cfg.steps:
                metrics, stopping = self._train_step(stop)
                window.append(metrics)
                progress.update(task, completed=self.step)
                last = self.step == cfg.steps
                if self.step % cfg.log_every == 0 or last:
                    values = {**self._summarize(_combine(window)), "lr": self.scheduler.get_last_lr()[0]}
                    window = []
                    self._log("train", values)
                    progress.update(task, summary=self._summary(values))
                if self.job.is_main and (self.step % cfg.valid_every == 0 or last):
                    progress.update(task, description="valid")
                    self.last_valid = self.validate()
                    if self.last_valid:
                        self._log("valid", self.last_valid)
                    progress.update(task, description="train")
                if self.step % cfg.checkpoint_every == 0 or last or stopping:
                    checkpoint = self.save()
                if stopping:
                    dist_utils.barrier(self.job)  # the others leave only once rank 0 has written it
                    launcher = f"torchrun --nproc_per_node={self.job.world_size} -m " if self.job.enabled else ""
                    raise TrainingInterrupted(
                        f"{stop.signal_name or 'a stop request on another rank'} at step {self.step}: saved {checkpoint}; "
                        f"continue with: {launcher}vqaudio train --resume {self.run_dir}"
                    )
        if checkpoint is None:  # resumed a run that had already finished
            checkpoint = list_checkpoints(self.run_dir)[-1]
        return TrainResult(self.run_dir, self.step, checkpoint, self.last_valid)


def _signed64(hex_digest: str) -> int:
    """A 16-hex-digit fingerprint as a signed 64-bit integer (what a long tensor holds)."""
    value = int(hex_digest, 16)
    return value - 2**64 if value >= 2**63 else value
