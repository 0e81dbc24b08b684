"""DAC's factorised codes for the vector quantiser (`model.quantizer.code_dim`).

The latent is projected to `code_dim` dimensions, looked up there among L2-normalised codes by
cosine similarity, and the chosen code is projected back. A low-dimensional, normalised lookup
uses far more of a codebook than a 64-dimensional one (Kumar et al. 2023). The codebook itself
is an ordinary `VectorQuantizer` (EMA updates, initialisation and restarts as configured).
"""

from __future__ import annotations

import torch
from torch import nn

from vqaudio.models.quantizer import QuantizerOutput, VectorQuantizer


class FactorizedQuantizer(nn.Module):
    """Latents [B, dim, *positions] quantised by `quantizer` (cosine, over its own smaller dim)."""

    # Its output carries gradients into its projections: a residual quantiser sums its levels as they are.
    straight_through_sum = False

    def __init__(self, quantizer: VectorQuantizer, dim: int) -> None:
        super().__init__()
        if not quantizer.cosine:
            raise ValueError("factorised codes are looked up by cosine similarity (cosine=True)")
        self.quantizer = quantizer
        self.dim = dim
        self.codebook_size = quantizer.codebook_size
        self.project_in = nn.Conv1d(dim, quantizer.dim, 1)
        self.project_out = nn.Conv1d(quantizer.dim, dim, 1)

    def _project(self, conv: nn.Conv1d, x: torch.Tensor) -> torch.Tensor:
        batch, channels = x.shape[:2]
        return conv(x.reshape(batch, channels, -1)).reshape(batch, -1, *x.shape[2:])

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        return self._project(self.project_out, self.quantizer.lookup(codes))

    def forward(self, z: torch.Tensor, mask: torch.Tensor | None = None) -> QuantizerOutput:
        """Quantise z [B, dim, *positions]; losses and statistics are those of the lookup space."""
        if z.shape[1] != self.dim:
            raise ValueError(f"expected {self.dim} channels in dimension 1, got shape {tuple(z.shape)}")
        small = self._project(self.project_in, z.float())
        out = self.quantizer(small, mask)
        out.quantized = self._project(self.project_out, out.quantized)
        return out

