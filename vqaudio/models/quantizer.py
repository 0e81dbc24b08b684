"""Vector quantiser: nearest codebook entry, straight-through gradient, EMA or loss-trained codebook,
with the options that keep a codebook healthy.

The input is channels-first, [B, D, *positions], so the same module serves 1-D audio latents
[B, D, T] and 2-D image latents [B, D, H, W]. Options (each a recipe key):

- `init`: `random` (N(0, 1)), `data` (K encoder outputs of the first batch) or `kmeans` (Lloyd's
  k-means on the encoder outputs of the first `init_batches` training batches);
- `restart_threshold`: a code whose moving-average usage falls below this fraction of a fair
  share (N/K assignments per batch) is re-seeded from the current batch's encoder outputs, and
  its EMA statistics are reset with it;
- `bias_correction`: Sonnet's zero-debiased EMA (statistics start at zero and are divided by
  1 - decay^t) instead of statistics that start at count 1 around the initial codes;
- `cosine`: codes and encoder outputs are L2-normalised and compared by cosine similarity.

Every statistic that decides the codebook (EMA counts and sums, k-means sums, usage) is summed
over ranks under torch.distributed, and seeds (data init, dead-code restarts) are drawn from all
ranks' encoder outputs with the shared RNG and broadcast from rank 0, so every rank holds the
same codebook, the one a single process with the whole batch would hold.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from vqaudio.models.kmeans import kmeans, nearest_code

Init = Literal["random", "data", "kmeans"]


@dataclass
class QuantizerOutput:
    """What callers need from one quantisation: codes, vectors, loss terms and usage."""

    quantized: torch.Tensor  # [B, D, *positions], straight-through to the input
    codes: torch.Tensor  # [B, *positions] (one codebook) or [B, n_q, *positions] (residual), int64
    loss: torch.Tensor  # the part of the loss the quantiser adds (commitment, and codebook if trained by loss)
    commitment_loss: torch.Tensor  # ||z_e - sg[e]||^2
    codebook_loss: torch.Tensor  # ||sg[z_e] - e||^2 (reported in EMA mode, not optimised)
    perplexity: torch.Tensor  # exp(entropy) of the code histogram of this batch (first codebook)
    codes_used: torch.Tensor  # distinct codes in this batch (first codebook)
    counts: torch.Tensor  # [K] or [n_q, K] assignments per code in this batch, for usage over many batches
    restarts: torch.Tensor  # codes re-seeded by this call


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum over distributed ranks when training is distributed, so every rank holds one codebook."""
    if _distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def gather_rows(flat: torch.Tensor) -> torch.Tensor:
    """Every rank's rows [N_r, D], concatenated in rank order (ranks may hold different N_r).

    Codebook seeds drawn from these rows are the ones a single process would draw from the
    whole batch, so a data-parallel run seeds its codebook as one process with the full batch.
    """
    if not _distributed():
        return flat
    world = dist.get_world_size()
    size = torch.tensor([flat.shape[0]], device=flat.device)
    sizes = [torch.empty_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    counts = [int(s) for s in sizes]
    padded = flat.new_zeros(max(counts), flat.shape[1])
    padded[: flat.shape[0]] = flat
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded.contiguous())
    return torch.cat([part[:count] for part, count in zip(parts, counts)])


def broadcast_from_first(tensor: torch.Tensor) -> torch.Tensor:
    """Give every rank rank 0's values (random draws must agree across ranks)."""
    if _distributed():
        dist.broadcast(tensor, src=0)
    return tensor


def usage_stats(counts: torch.Tensor) -> dict[str, float]:
    """Codes used, perplexity and entropy (bits) of a histogram of code assignments [K]."""
    counts = counts.double()
    total = counts.sum().clamp_min(1)
    probs = counts / total
    entropy = -(probs * torch.log2(probs.clamp_min(1e-30))).sum().item()
    return {"codes_used": float((counts > 0).sum()), "perplexity": 2.0**entropy, "entropy": entropy}


class VectorQuantizer(nn.Module):
    """K codes of dimension D. `update='ema'` follows the paper's appendix (decay 0.99, Laplace
    smoothing); `update='loss'` learns the codebook with the ||sg[z_e] - e||^2 term."""

    def __init__(
        self,
        codebook_size: int,
        dim: int,
        beta: float = 0.25,
        update: Literal["ema", "loss"] = "ema",
        decay: float = 0.99,
        epsilon: float = 1e-5,
        init: Init = "data",
        init_batches: int = 4,
        kmeans_iters: int = 10,
        restart_threshold: float = 0.0,
        usage_decay: float = 0.95,
        bias_correction: bool = False,
        cosine: bool = False,
    ) -> None:
        super().__init__()
        if update not in ("ema", "loss"):
            raise ValueError(f"update must be 'ema' or 'loss', not {update!r}")
        if init not in ("random", "data", "kmeans"):
            raise ValueError(f"init must be 'random', 'data' or 'kmeans', not {init!r}")
        self.codebook_size = codebook_size
        self.dim = dim
        self.beta = beta
        self.update = update
        self.decay = decay
        self.epsilon = epsilon
        self.init = init
        self.init_batches = init_batches if init == "kmeans" else 1
        self.kmeans_iters = kmeans_iters
        self.restart_threshold = restart_threshold
        self.usage_decay = usage_decay
        self.bias_correction = bias_correction
        self.cosine = cosine
        initial = torch.randn(codebook_size, dim)
        if cosine:
            initial = F.normalize(initial, dim=1)
        # 0 until the codebook has been seeded from encoder outputs (saved with the weights).
        self.register_buffer("initialized", torch.tensor(int(init == "random"), dtype=torch.uint8))
        self.register_buffer("usage", torch.zeros(codebook_size))  # EMA of assignments per batch
        if update == "ema":
            self.register_buffer("codebook", initial)
            self.register_buffer("ema_count", torch.zeros(codebook_size))
            self.register_buffer("ema_sum", torch.zeros(codebook_size, dim))
            self.register_buffer("ema_steps", torch.zeros((), dtype=torch.long))
            self._reset_ema(torch.ones(codebook_size, dtype=torch.bool))
        else:
            self.codebook = nn.Parameter(initial)
        self._pending: list[torch.Tensor] = []  # encoder outputs gathered for k-means
        # Under gradient accumulation the loop sets this: statistics wait for `flush_statistics`.
        self.defer_statistics = False
        self._deferred: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    # ----- codebook access -----

    def vectors(self) -> torch.Tensor:
        """The codebook as used for lookup (unit rows when `cosine`)."""
        return F.normalize(self.codebook, dim=1) if self.cosine else self.codebook

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """Code vectors for integer codes [B, *positions] -> [B, D, *positions]."""
        return F.embedding(codes, self.vectors()).movedim(-1, 1)

    def nearest(self, flat: torch.Tensor) -> torch.Tensor:
        """Index of the nearest code for each row of `flat` [N, D]."""
        return nearest_code(flat, self.vectors().detach().float())

    # ----- statistics -----

    @torch.no_grad()
    def _reset_ema(self, which: torch.Tensor) -> None:
        """Restart the EMA statistics of the codes in `which` around their current vectors."""
        if self.update != "ema":
            return
        if self.bias_correction:
            # Zero-debiased statistics: empty before the first update (as in Sonnet); later, hidden
            # values whose corrected average is one observation of the code's vector.
            steps = int(self.ema_steps)
            weight = 1.0 - self.decay**steps if steps else 0.0
            self.ema_count[which] = weight
            self.ema_sum[which] = self.codebook[which] * weight
        else:
            self.ema_count[which] = 1.0
            self.ema_sum[which] = self.codebook[which]

    @torch.no_grad()
    def _set_codes(self, which: torch.Tensor, vectors: torch.Tensor) -> None:
        if self.cosine:
            vectors = F.normalize(vectors, dim=1)
        self.codebook.data[which] = vectors.to(self.codebook.dtype)
        self._reset_ema(which)

    @torch.no_grad()
    def _initialise(self, flat: torch.Tensor) -> None:
        """Seed the codebook from encoder outputs: K random rows (`data`) or k-means (`kmeans`)."""
        self._pending.append(flat)
        if len(self._pending) < self.init_batches:
            if len(self._pending) == 1:  # train with data-seeded codes until k-means has its data
                everything = torch.ones(self.codebook_size, dtype=torch.bool, device=flat.device)
                self._set_codes(everything, self._sample(gather_rows(flat), self.codebook_size))
            return
        data = torch.cat(self._pending)  # this rank's rows: k-means sums its statistics over ranks
        everyone = torch.cat([gather_rows(batch) for batch in self._pending])  # batch by batch, as one process
        self._pending = []
        seeds = self._sample(everyone, self.codebook_size)
        if self.init == "kmeans":
            seeds = kmeans(data, seeds, self.kmeans_iters, cosine=self.cosine)
        everything = torch.ones(self.codebook_size, dtype=torch.bool, device=flat.device)
        self._set_codes(everything, seeds)
        rows = all_reduce_sum(torch.tensor(float(flat.shape[0]), device=flat.device))
        self.usage.fill_(float(rows) / self.codebook_size)  # a fair share each
        self.initialized.fill_(1)

    def _sample(self, flat: torch.Tensor, count: int) -> torch.Tensor:
        """`count` rows of `flat` (every rank's rows, from `gather_rows`) drawn at random, with
        replacement; identical on all ranks (they share the RNG state; the broadcast guards drift)."""
        picks = torch.randint(0, flat.shape[0], (count,), device=flat.device)
        rows = flat[picks] + 1e-4 * flat.std() * torch.randn(count, flat.shape[1], device=flat.device)
        return broadcast_from_first(rows.contiguous())

    @torch.no_grad()
    def _ema_update(self, flat: torch.Tensor, codes: torch.Tensor, counts: torch.Tensor) -> None:
        sums = torch.zeros_like(self.ema_sum).index_add_(0, codes, flat)
        all_reduce_sum(sums)
        self.ema_count.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        self.ema_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
        self.ema_steps.add_(1)
        count, total_sum = self.ema_count, self.ema_sum
        if self.bias_correction:
            debias = 1.0 - self.decay ** int(self.ema_steps)
            count, total_sum = count / debias, total_sum / debias
        total = count.sum()
        smoothed = (count + self.epsilon) / (total + self.codebook_size * self.epsilon) * total
        updated = total_sum / smoothed[:, None]
        if self.cosine:
            updated = F.normalize(updated, dim=1)
        seen = count > 0  # a code never assigned keeps its vector rather than collapsing to 0
        self.codebook.copy_(torch.where(seen[:, None], updated, self.codebook))

    @torch.no_grad()
    def _restart_dead(self, flat: torch.Tensor, assignments: float) -> int:
        """Re-seed codes whose moving-average usage fell below the threshold; returns how many.

        `assignments` is this step's total over all ranks, so every rank finds the same codes dead."""
        fair = assignments / self.codebook_size
        dead = self.usage < self.restart_threshold * fair
        count = int(dead.sum())
        if count:
            self._set_codes(dead, self._sample(gather_rows(flat), count))
            self.usage[dead] = fair  # a fresh code gets a fair share of time to be chosen
        return count

    @torch.no_grad()
    def _learn(self, active: torch.Tensor, codes: torch.Tensor, counts: torch.Tensor, seeds_from: torch.Tensor) -> int:
        """Update usage, the EMA codebook and dead codes from one step's assignments (`counts`
        already summed over ranks); returns how many codes were re-seeded."""
        self.usage.mul_(self.usage_decay).add_(counts, alpha=1 - self.usage_decay)
        if self.update == "ema":
            self._ema_update(active, codes, counts)
        if self.restart_threshold > 0 and self.initialized:
            return self._restart_dead(seeds_from, float(counts.sum()))
        return 0

    @torch.no_grad()
    def flush_statistics(self) -> int:
        """Learn from every micro-batch seen while `defer_statistics` was set, as from one batch
        holding them all (the training loop calls this once per optimiser step); returns restarts."""
        if not self._deferred:
            return 0
        active = torch.cat([a for a, _, _ in self._deferred])
        codes = torch.cat([c for _, c, _ in self._deferred])
        seeds_from = torch.cat([s for _, _, s in self._deferred])
        self._deferred = []
        counts = all_reduce_sum(torch.bincount(codes, minlength=self.codebook_size).float())
        return self._learn(active, codes, counts, seeds_from)

    # ----- forward -----

    @torch.compiler.disable  # data-dependent codebook logic: eager under train.compile, the nets around it compiled
    def forward(self, z: torch.Tensor, mask: torch.Tensor | None = None) -> QuantizerOutput:
        """Quantise z [B, D, *positions]; `mask` [B] (bool) leaves examples out of every statistic
        and loss (residual quantiser dropout)."""
        if z.shape[1] != self.dim:
            raise ValueError(f"expected {self.dim} channels in dimension 1, got shape {tuple(z.shape)}")
        with torch.autocast(device_type=z.device.type, enabled=False):
            z = z.float()
            if self.cosine:
                z = F.normalize(z, dim=1)
            channels_last = z.movedim(1, -1)
            flat = channels_last.reshape(-1, self.dim)
            rows = None
            if mask is not None:
                rows = mask.view(-1, *([1] * (z.dim() - 2))).expand(channels_last.shape[:-1]).reshape(-1)
            active = flat.detach() if rows is None else flat.detach()[rows]
            # Seeds are drawn from the active rows, or from all rows when dropout left none here.
            # Every rank must take the same collective steps, so nothing below depends on it.
            seeds_from = active if active.shape[0] else flat.detach()
            learning = self.training
            if learning and not self.initialized:
                self._initialise(seeds_from)
            codes_flat = self.nearest(flat.detach())
            chosen = F.embedding(codes_flat, self.vectors()).view_as(channels_last).movedim(-1, 1)
            active_codes = codes_flat if rows is None else codes_flat[rows]
            counts = torch.bincount(active_codes, minlength=self.codebook_size).float()
            restarts = 0
            if learning:
                all_reduce_sum(counts)
                if self.defer_statistics:  # gradient accumulation: learn once, at the end of the step
                    self._deferred.append((active, active_codes, seeds_from))
                else:
                    restarts = self._learn(active, active_codes, counts, seeds_from)
            weights = None if mask is None else mask.float().view(-1, *([1] * (z.dim() - 1)))
            commitment = _masked_mse(z, chosen.detach(), weights)
            codebook_loss = _masked_mse(z.detach(), chosen, weights)
            loss = self.beta * commitment
            if self.update == "loss":
                loss = loss + codebook_loss
            quantized = z + (chosen - z).detach()
            probs = counts / counts.sum().clamp_min(1)
            perplexity = torch.exp(-(probs * torch.log(probs.clamp_min(1e-10))).sum())
        return QuantizerOutput(
            quantized=quantized,
            codes=codes_flat.view(channels_last.shape[:-1]),
            loss=loss,
            commitment_loss=commitment.detach(),
            codebook_loss=codebook_loss.detach(),
            perplexity=perplexity,
            codes_used=(counts > 0).sum(),
            counts=counts,
            restarts=torch.tensor(float(restarts)),
        )


def _masked_mse(a: torch.Tensor, b: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """Mean squared error over the examples whose weight is 1 (all when `weights` is None)."""
    if weights is None:
        return F.mse_loss(a, b)
    per_example_elements = math.prod(a.shape[1:])
    return ((a - b).pow(2) * weights).sum() / (weights.sum() * per_example_elements).clamp_min(1)
