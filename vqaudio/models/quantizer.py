"""Vector quantiser: nearest codebook entry, straight-through gradient, EMA or loss-trained codebook.

The input is channels-first, [B, D, *positions], so the same module serves 1-D audio latents
[B, D, T] and 2-D image latents [B, D, H, W].
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


@dataclass
class QuantizerOutput:
    """What callers need from one quantisation: codes, vectors, loss terms and usage."""

    quantized: torch.Tensor  # [B, D, *positions], straight-through to the input
    codes: torch.Tensor  # [B, *positions], int64
    loss: torch.Tensor  # the part of the loss the quantiser adds (commitment, and codebook if trained by loss)
    commitment_loss: torch.Tensor  # ||z_e - sg[e]||^2
    codebook_loss: torch.Tensor  # ||sg[z_e] - e||^2 (reported in EMA mode, not optimised)
    perplexity: torch.Tensor  # exp(entropy) of the code histogram of this batch
    codes_used: torch.Tensor  # number of distinct codes in this batch


def _all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum over distributed ranks when training is distributed, so every rank holds one codebook."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


class VectorQuantizer(nn.Module):
    """K codes of dimension D. `update='ema'` follows the paper's appendix (decay 0.99, Laplace
    smoothing); `update='loss'` learns the codebook with the ||sg[z_e] - e||^2 term.

    EMA statistics start at count 1 with sum = the initial code, so an unused code keeps its
    initial value instead of being divided by a near-zero count.
    """

    def __init__(
        self,
        num_codes: int,
        dim: int,
        beta: float = 0.25,
        update: Literal["ema", "loss"] = "ema",
        decay: float = 0.99,
        epsilon: float = 1e-5,
        data_init: bool = True,
    ) -> None:
        super().__init__()
        self.num_codes = num_codes
        self.dim = dim
        self.beta = beta
        self.update = update
        self.decay = decay
        self.epsilon = epsilon
        self.data_init = data_init
        # 0 until the codebook has been seeded from encoder outputs (saved with the weights).
        self.register_buffer("initialized", torch.tensor(0 if data_init else 1, dtype=torch.uint8))
        initial = torch.randn(num_codes, dim)
        if update == "ema":
            self.register_buffer("codebook", initial)
            self.register_buffer("ema_count", torch.ones(num_codes))
            self.register_buffer("ema_sum", initial.clone())
        elif update == "loss":
            self.codebook = nn.Parameter(initial)
        else:
            raise ValueError(f"update must be 'ema' or 'loss', not {update!r}")

    def nearest(self, flat: torch.Tensor) -> torch.Tensor:
        """Index of the nearest code for each row of `flat` [N, D] (squared Euclidean distance)."""
        codebook = self.codebook.float()
        distances = (
            flat.pow(2).sum(1, keepdim=True)
            - 2 * flat @ codebook.t()
            + codebook.pow(2).sum(1)[None, :]
        )
        return distances.argmin(1)

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """Code vectors for integer codes [B, *positions] -> [B, D, *positions]."""
        vectors = F.embedding(codes, self.codebook)
        return vectors.movedim(-1, 1)

    @torch.no_grad()
    def _seed_from_data(self, flat: torch.Tensor) -> None:
        """Replace the codebook by K encoder outputs drawn from the first training batch.

        A random codebook far from where the encoder's outputs lie makes every vector pick the
        same few codes (collapse at step 0); seeding from data starts every code in use.
        """
        picks = torch.randint(0, flat.shape[0], (self.num_codes,), device=flat.device)
        seeds = flat[picks] + 1e-3 * flat.std() * torch.randn(self.num_codes, self.dim, device=flat.device)
        if dist.is_available() and dist.is_initialized():
            dist.broadcast(seeds, src=0)  # every rank starts from rank 0's codebook
        self.codebook.data.copy_(seeds)
        if self.update == "ema":
            self.ema_sum.copy_(seeds)
            self.ema_count.fill_(1.0)
        self.initialized.fill_(1)

    @torch.no_grad()
    def _ema_update(self, flat: torch.Tensor, codes: torch.Tensor) -> None:
        counts = torch.bincount(codes, minlength=self.num_codes).to(flat.dtype)
        sums = torch.zeros_like(self.ema_sum).index_add_(0, codes, flat)
        _all_reduce_sum(counts)
        _all_reduce_sum(sums)
        self.ema_count.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        self.ema_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
        total = self.ema_count.sum()
        smoothed = (self.ema_count + self.epsilon) / (total + self.num_codes * self.epsilon) * total
        self.codebook.copy_(self.ema_sum / smoothed[:, None])

    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        if z.shape[1] != self.dim:
            raise ValueError(f"expected {self.dim} channels in dimension 1, got shape {tuple(z.shape)}")
        with torch.autocast(device_type=z.device.type, enabled=False):
            z = z.float()
            channels_last = z.movedim(1, -1)
            flat = channels_last.reshape(-1, self.dim)
            if self.training and not self.initialized:
                self._seed_from_data(flat.detach())
            codes_flat = self.nearest(flat.detach())
            chosen = F.embedding(codes_flat, self.codebook).view_as(channels_last).movedim(-1, 1)
            if self.training and self.update == "ema":
                self._ema_update(flat.detach(), codes_flat)
            commitment = F.mse_loss(z, chosen.detach())
            codebook_loss = F.mse_loss(z.detach(), chosen)
            loss = self.beta * commitment
            if self.update == "loss":
                loss = loss + codebook_loss
            quantized = z + (chosen - z).detach()
            counts = torch.bincount(codes_flat, minlength=self.num_codes).float()
            probs = counts / counts.sum().clamp_min(1)
            perplexity = torch.exp(-(probs * torch.log(probs.clamp_min(1e-10))).sum())
            codes_used = (counts > 0).sum()
        return QuantizerOutput(
            quantized=quantized,
            codes=codes_flat.view(channels_last.shape[:-1]),
            loss=loss,
            commitment_loss=commitment.detach(),
            codebook_loss=codebook_loss.detach(),
            perplexity=perplexity,
            codes_used=codes_used,
        )
