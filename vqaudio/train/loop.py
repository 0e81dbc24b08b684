"""The one training loop. Every model (VQ-VAE, priors, image models) plugs in through `TrainSetup`.

A model only has to provide `training_step(batch) -> (loss, metrics)`; how it is updated is the
setup's `Optimization` (one Adam optimiser by default). The loop owns device placement, autocast,
gradient accumulation, torch.compile, data-parallel training (DDP under torchrun), logging,
validation, checkpoints, resumption and graceful interruption.

Batches are a pure function of (seed, step): each step draws a global batch of
batch_size x accumulate_batches x world_size examples and every (micro-batch, rank) pair builds
only its own slice. So a 2-process run sees exactly the batch a 1-process run with twice the
batch size sees, and a resumed run continues with exactly the data it would have had. Quantisers
that learn from statistics (EMA codebooks) gather them over the step's micro-batches and update
once per optimiser step, as one batch of the whole size would.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from torch import nn

from vqaudio.errors import TrainingInterrupted, VQAudioError
from vqaudio.formats.checkpoint import (
    list_checkpoints,
    model_fingerprint,
    save_checkpoint,
)
from vqaudio.progress import step_bar
from vqaudio.recipe import Recipe
from vqaudio.train import distributed as dist_utils
from vqaudio.train.distributed import SINGLE, Distributed
from vqaudio.train.metrics_log import MetricsLog
from vqaudio.train.rng import capture_rng, restore_rng
from vqaudio.train.setup import (
    Batch,
    Diverged,
    Metrics,
    Shard,
    TrainSetup,
    combine,
    detach,
)
from vqaudio.train.signals import StopRequest

ValidationHook = Callable[[int, dict[str, float]], None]
"""Called with the step and the validation metrics after each validation; may raise to stop training."""


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    checkpoint: Path
    last_valid: dict[str, float]


def to_device(batch: Batch, device: torch.device) -> Batch:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


class _StepModule(nn.Module):
    """`forward` runs the model's training step: DDP synchronises gradients only for work done
    through `forward` (the critic's too), and torch.compile compiles `forward`."""

    def __init__(self, model: nn.Module, critic: nn.Module | None) -> None:
        super().__init__()
        self.model = model
        self.critic = critic

    def forward(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if self.critic is None:
            return self.model.training_step(batch)
        return self.model.training_step(batch, self.critic)


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


class _StepBatches:
    """One step's micro-batches for an `Optimization` (see `vqaudio.train.setup.MicroBatches`)."""

    def __init__(self, trainer: Trainer, stop: StopRequest | None) -> None:
        self.trainer = trainer
        self.stop = stop
        self.count = trainer.config.accumulate_batches
        self.stopping = False

    def __iter__(self) -> Iterator[tuple[Batch, bool]]:
        t, job = self.trainer, self.trainer.job
        size = t.config.batch_size
        total = size * self.count * job.world_size
        for index in range(self.count):
            part = index * job.world_size + job.rank
            shard = Shard(total, part * size, (part + 1) * size)
            yield to_device(t.setup.train_batch(t.step, shard), t.device), index == self.count - 1

    def forward(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        with self.trainer.autocast():
            return self.trainer.forward(batch)

    def sync(self, last: bool) -> contextlib.AbstractContextManager[Any]:
        if self.trainer.job.enabled and not last:
            return self.trainer.step_module.no_sync()
        return contextlib.nullcontext()

    def agree(self, metrics: Metrics, finite: bool) -> tuple[Metrics, bool]:
        """Average the scalar metrics over ranks and combine the stop and divergence flags, in one
        small all-reduce. Histograms (code counts) are already sums over ranks."""
        job = self.trainer.job
        stopping = self.stop is not None and self.stop.signal_name is not None
        if not job.enabled:
            self.stopping = stopping
            return metrics, finite
        scalars = [k for k, v in metrics.items() if not torch.is_tensor(v)]
        values = torch.tensor(
            [float(stopping), float(not finite)] + [float(metrics[k]) if finite else 0.0 for k in scalars],
            dtype=torch.float64,
            device=self.trainer.device,
        )
        values = dist_utils.reduce_step(job, values).cpu()
        averaged = {k: float(values[2 + i]) / job.world_size for i, k in enumerate(scalars)}
        self.stopping = bool(values[0] > 0)
        return {**metrics, **averaged}, bool(values[1] == 0)


def _accumulating_modules(model: nn.Module) -> list[nn.Module]:
    """Modules that learn from batch statistics and can defer that to the end of the step."""
    return [m for m in model.modules() if hasattr(m, "flush_statistics")]


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
        on_validation: ValidationHook | None = None,
    ) -> None:
        self.setup = setup
        self.on_validation = on_validation
        self.recipe = recipe
        self.config = recipe.train
        self.run_dir = run_dir
        self.device = device
        self.job = job
        self.console = console or Console(stderr=True)
        self.show_progress = show_progress and job.is_main
        self.model = setup.model.to(device)
        self.critic = setup.critic.to(device) if setup.critic is not None else None
        self.optimization = setup.optimization(self.model, self.config)
        self.step = 0
        self.last_valid: dict[str, float] = {}
        self.autocast_dtype = autocast_dtype(self.config.precision, device)
        self.metrics_log: MetricsLog | _NullLog = MetricsLog(run_dir, self.config.tensorboard) if job.is_main else _NullLog()
        self.step_module: nn.Module = _StepModule(self.model, self.critic)
        if job.enabled:
            self.step_module = dist_utils.data_parallel(self.step_module, device, self._has_unused_parameters())
            if job.rank:  # rank 0 keeps the recipe's stream; the others draw their own noise
                torch.manual_seed(recipe.seed * 1_000_003 + job.rank)
        self.forward = torch.compile(self.step_module) if self.config.compile else self.step_module
        self._deferring = _accumulating_modules(self.model)

    def _has_unused_parameters(self) -> bool:
        if self.critic is not None:
            return True  # the discriminators sit idle until train.adversarial_start
        shard = Shard(self.config.batch_size * self.job.world_size, 0, self.config.batch_size)

        def probe_step(probe: nn.Module) -> torch.Tensor:
            with self.autocast():
                loss, _ = probe.training_step(to_device(self.setup.train_batch(0, shard), self.device))
            return loss

        return dist_utils.has_unused_parameters(self.model, probe_step, self.device)

    # ----- state -----

    def state(self, rank_rng: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        model_state = {k: v.detach().cpu() for k, v in self.model.state_dict().items()}
        return {
            "kind": self.setup.kind,
            "recipe": self.recipe.to_dict(),
            "step": self.step,
            "model": model_state,
            **self.optimization.state_dict(),
            "rng": {**capture_rng(self.device), **({"ranks": rank_rng} if rank_rng else {})},
            "fingerprint": model_fingerprint(model_state),
            "metadata": self.setup.metadata.model_dump(mode="json"),
            "valid": self.last_valid,
        }

    def load_state(self, payload: dict[str, Any]) -> None:
        """Continue exactly where a checkpoint stopped: weights, optimiser(s), schedule, step, RNG."""
        self.model.load_state_dict(payload["model"])
        self.optimization.load_state_dict(payload)
        self.step = int(payload["step"])
        self.last_valid = dict(payload.get("valid") or {})
        rng = payload["rng"]
        ranks = rng.get("ranks") or []
        if len(ranks) == self.job.world_size:
            rng = ranks[self.job.rank]  # the same job shape: every rank continues its own stream
        elif self.job.rank:  # another shape: fresh per-rank noise, seeded by rank and step
            torch.manual_seed((self.recipe.seed * 1_000_003 + self.job.rank) * 1_000_003 + self.step)
            return
        restore_rng(rng, self.device)

    def _gather_rng(self) -> list[dict[str, Any]] | None:
        """Every rank's RNG state, on rank 0 (None for one process)."""
        if not self.job.enabled:
            return None
        import torch.distributed as dist

        mine = capture_rng(self.device)
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
        order = ["loss", "nll", "mel", "discriminator", "commitment", "perplexity", "codes_used"]
        parts = [f"{k} {values[k]:.3g}" for k in order if k in values]
        return "  ".join(parts)

    # ----- the loop -----

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)

    def _train_step(self, stop: StopRequest | None = None) -> tuple[Metrics, bool]:
        """One optimiser step; returns its metrics and whether any rank was asked to stop (every
        rank must agree, or the others would hang)."""
        self.model.train()
        batches = _StepBatches(self, stop)
        defer = batches.count > 1
        for module in self._deferring:
            module.defer_statistics = defer
        try:
            metrics = self.optimization.step(batches)
        except Diverged:
            raise VQAudioError(
                f"training diverged: the loss became non-finite at step {self.step} of {self.run_dir}; "
                "lower train.lr, or resume from its last checkpoint"
            ) from None
        finally:
            for module in self._deferring:
                module.defer_statistics = False
        for module in self._deferring:
            module.flush_statistics()  # the step's EMA update, from every micro-batch's statistics
        self.step += 1
        return metrics, batches.stopping

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
            batch = to_device(batch, self.device)
            with self.autocast():
                _, metrics = self.model.training_step(batch)
            results.append(detach(metrics))
        return self._summarize(combine(results)) if results else {}

    def run(self) -> TrainResult:
        """Train to `train.steps`; on Ctrl-C or SIGTERM, checkpoint and raise TrainingInterrupted."""
        cfg = self.config
        window: list[Metrics] = []
        checkpoint = None
        bar = step_bar(cfg.steps, self.step, self.console, self.show_progress)
        with contextlib.closing(self.metrics_log), StopRequest() as stop, bar as progress:
            while self.step < cfg.steps:
                metrics, stopping = self._train_step(stop)
                window.append(metrics)
                progress.update(completed=self.step)
                last = self.step == cfg.steps
                if self.step % cfg.log_every == 0 or last:
                    values = {**self._summarize(combine(window)), "lr": self.optimization.last_lr()}
                    window = []
                    self._log("train", values)
                    progress.update(summary=self._summary(values))
                if self.job.is_main and (self.step % cfg.valid_every == 0 or last):
                    progress.update(description="valid")
                    self.last_valid = self.validate()
                    if self.last_valid:
                        self._log("valid", self.last_valid)
                        if self.on_validation is not None:
                            self.on_validation(self.step, self.last_valid)  # may raise to end the run here
                    progress.update(description="train")
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
