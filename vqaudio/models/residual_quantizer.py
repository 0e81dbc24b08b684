"""Residual vector quantisation (SoundStream, EnCodec): n_q codebooks applied to successive
residuals, with quantiser dropout so that one model decodes from its first 1..n_q codebooks.

Codes are [B, n_q, *positions]; bitrate = n_q x log2 K x latent rate. With n_q = 1 this is the
plain VQ-VAE quantiser. Each level is a `VectorQuantizer` by default, or whatever `make_level`
makes with the same interface (finite scalar quantisation, factorised codes).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from vqaudio.models.quantizer import QuantizerOutput, VectorQuantizer


class ResidualVectorQuantizer(nn.Module):
    def __init__(self, n_q: int = 1, dropout: bool = False, make_level: Callable[[], nn.Module] | None = None, **quantizer: Any) -> None:
        super().__init__()
        if n_q < 1:
            raise ValueError("n_q must be at least 1")
        self.levels = nn.ModuleList((make_level() if make_level else VectorQuantizer(**quantizer)) for _ in range(n_q))
        self.dropout = dropout
        # A codebook's output is the chosen vector, straight-through: the levels' vectors are summed
        # and one straight-through gradient passes the sum. Levels whose output carries gradients
        # of its own (projections to learn) are summed as they are.
        self.straight_through_sum = getattr(self.levels[0], "straight_through_sum", True)

    @property
    def n_q(self) -> int:
        return len(self.levels)

    @property
    def codebook_size(self) -> int:
        return self.levels[0].codebook_size

    @property
    def dim(self) -> int:
        return self.levels[0].dim

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes [B, n, *positions] (n <= n_q) -> the sum of their vectors [B, D, *positions]."""
        if codes.shape[1] > self.n_q:
            raise ValueError(f"{codes.shape[1]} codebooks given, the model has {self.n_q}")
        return sum(level.lookup(codes[:, i]) for i, level in enumerate(self.levels[: codes.shape[1]]))

    @torch.compiler.disable  # data-dependent codebook logic: eager under train.compile, the nets around it compiled
    def forward(self, z: torch.Tensor, n_q: int | None = None) -> QuantizerOutput:
        """Quantise with the first `n_q` codebooks (all by default). In training with dropout each
        example uses a random number 1..n_q of them, and the rest leave its loss and statistics."""
        use = self.n_q if n_q is None else n_q
        if not 1 <= use <= self.n_q:
            raise ValueError(f"n_q must be in 1..{self.n_q}, got {use}")
        batch = z.shape[0]
        active_levels = None
        if self.training and self.dropout and use > 1:
            active_levels = torch.randint(1, use + 1, (batch,), device=z.device)
        residual = z
        total = torch.zeros_like(z, dtype=torch.float32)
        codes, counts, outputs = [], [], []
        for index, level in enumerate(self.levels[:use]):
            mask = None if active_levels is None else active_levels > index
            out = level(residual, mask)
            vectors = out.quantized.detach()  # the chosen codes (forward value of the straight-through)
            keep = 1.0 if mask is None else mask.float().view(-1, *([1] * (z.dim() - 1)))
            total = total + (vectors if self.straight_through_sum else out.quantized) * keep
            residual = residual - vectors
            codes.append(out.codes)
            counts.append(out.counts)
            outputs.append(out)
        quantized = z.float() + (total - z.float()).detach() if self.straight_through_sum else total
        first = outputs[0]
        return QuantizerOutput(
            quantized=quantized,
            codes=torch.stack(codes, dim=1),
            loss=sum(o.loss for o in outputs),
            commitment_loss=sum(o.commitment_loss for o in outputs),
            codebook_loss=sum(o.codebook_loss for o in outputs),
            perplexity=first.perplexity,
            codes_used=first.codes_used,
            counts=torch.stack(counts),
            restarts=sum(o.restarts for o in outputs),
        )
