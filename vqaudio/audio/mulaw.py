"""μ-law companding and quantisation to the 256 classes the WaveNet decoder predicts."""

from __future__ import annotations

import math

import torch


def mulaw_encode(audio: torch.Tensor, channels: int = 256) -> torch.Tensor:
    """Map float audio in [-1, 1] to integer classes 0..channels-1 (μ = channels - 1)."""
    mu = channels - 1
    x = audio.clamp(-1.0, 1.0)
    y = torch.sign(x) * torch.log1p(mu * x.abs()) / math.log1p(mu)
    return ((y + 1) / 2 * mu + 0.5).floor().long().clamp(0, mu)


def mulaw_decode(classes: torch.Tensor, channels: int = 256) -> torch.Tensor:
    """Map integer classes back to float audio in [-1, 1] (the inverse of `mulaw_encode`)."""
    mu = channels - 1
    y = classes.float() / mu * 2 - 1
    return torch.sign(y) * ((1 + mu) ** y.abs() - 1) / mu


def silence_class(channels: int = 256) -> int:
    """The class that encodes 0.0, used as the 'previous sample' before the first one."""
    return int(mulaw_encode(torch.zeros(1), channels).item())
