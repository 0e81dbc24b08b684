"""Finite scalar quantisation (Mentzer et al. 2023, "Finite Scalar Quantization: VQ-VAE Made Simple").

The latent is projected to as many dimensions as `levels` has entries; each is bounded by tanh to
(-L/2, L/2) and rounded to one of L values, with a straight-through gradient. The code of a
vector is its grid point's index in mixed radix (levels[0] varies fastest), so K = prod(levels)
(`[8, 5, 5, 5]`: 1000 codes). There is no codebook to learn or collapse, and no codebook loss.
A 1x1 projection brings the grid point back to the model's latent dimension.

It has the vector quantiser's interface (`forward(z, mask) -> QuantizerOutput`, `lookup`,
`codebook_size`, `dim`), so residual quantisation, quantiser dropout, usage statistics, priors
and `.vqa` files take it as they take a codebook.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from vqaudio.models.quantizer import QuantizerOutput

EPS = 1e-3  # keeps tanh's bound off the half-integers, so rounding never lands outside the grid


class FiniteScalarQuantizer(nn.Module):
    straight_through_sum = False  # its output carries gradients to its projections: sum levels as they are

    def __init__(self, levels: list[int], dim: int) -> None:
        super().__init__()
        if not levels or min(levels) < 2:
            raise ValueError(f"FSQ levels must be at least 2 each, not {levels}")
        self.levels_list = list(levels)
        self.dim = dim
        self.codebook_size = math.prod(levels)
        self.register_buffer("levels", torch.tensor(levels, dtype=torch.float32), persistent=False)
        basis = torch.cumprod(torch.tensor([1, *levels[:-1]], dtype=torch.long), dim=0)
        self.register_buffer("basis", basis, persistent=False)
        self.project_in = nn.Conv1d(dim, len(levels), 1)
        self.project_out = nn.Conv1d(len(levels), dim, 1)

    def bound(self, z: torch.Tensor) -> torch.Tensor:
        """[..., d] -> values in (-L/2, L/2) per dimension, centred so that rounding gives L values."""
        half = (self.levels - 1) * (1 + EPS) / 2
        offset = torch.where(self.levels % 2 == 0, 0.5, 0.0)
        shift = torch.atanh(offset / half)
        return torch.tanh(z + shift) * half - offset

    def grid(self, z: torch.Tensor) -> torch.Tensor:
        """[..., d] -> the nearest grid point in [-1, 1] per dimension, straight-through."""
        bounded = self.bound(z)
        rounded = bounded + (bounded.round() - bounded).detach()
        return rounded / (self.levels // 2)

    def codes_from_grid(self, grid: torch.Tensor) -> torch.Tensor:
        """Grid points [..., d] in [-1, 1] -> integer codes [...]."""
        digits = (grid * (self.levels // 2) + self.levels // 2).round().long()
        return (digits * self.basis).sum(-1)

    def grid_from_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """Integer codes [...] -> grid points [..., d] in [-1, 1]."""
        digits = (codes.unsqueeze(-1) // self.basis) % self.levels.long()
        return (digits.float() - self.levels // 2) / (self.levels // 2)

    def _out(self, grid: torch.Tensor) -> torch.Tensor:
        """Grid points [B, *positions, d] -> latent vectors [B, D, *positions]."""
        flat = grid.movedim(-1, 1)
        shape = flat.shape
        return self.project_out(flat.reshape(shape[0], shape[1], -1)).reshape(shape[0], self.dim, *shape[2:])

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes [B, *positions] -> [B, D, *positions]."""
        return self._out(self.grid_from_codes(codes))

    def forward(self, z: torch.Tensor, mask: torch.Tensor | None = None) -> QuantizerOutput:
        """Quantise z [B, D, *positions]; `mask` [B] leaves examples out of the usage counts."""
        if z.shape[1] != self.dim:
            raise ValueError(f"expected {self.dim} channels in dimension 1, got shape {tuple(z.shape)}")
        with torch.autocast(device_type=z.device.type, enabled=False):
            z = z.float()
            batch, positions = z.shape[0], z.shape[2:]
            projected = self.project_in(z.reshape(batch, self.dim, -1)).reshape(batch, -1, *positions)
            grid = self.grid(projected.movedim(1, -1))
            codes = self.codes_from_grid(grid.detach())
            quantized = self._out(grid)
            active = codes if mask is None else codes[mask]
            counts = torch.bincount(active.reshape(-1), minlength=self.codebook_size).float()
            probs = counts / counts.sum().clamp_min(1)
            zero = z.new_zeros(())
        return QuantizerOutput(
            quantized=quantized,
            codes=codes,
            loss=zero,
            commitment_loss=zero,
            codebook_loss=zero,
            perplexity=torch.exp(-(probs * torch.log(probs.clamp_min(1e-10))).sum()),
            codes_used=(counts > 0).sum(),
            counts=counts,
            restarts=torch.tensor(0.0),
        )
