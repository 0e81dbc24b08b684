"""Likelihood of 8-bit images under per-sub-pixel categoricals, and bits per dimension."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def to_unit_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 [B, H, W, 3] -> float [B, 3, H, W] in [-1, 1] (the networks' input)."""
    return images.permute(0, 3, 1, 2).float() / 127.5 - 1.0


def pixel_nll(logits: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """Negative log-likelihood in nats of each image: logits [B, 3, 256, H, W], images uint8 [B, H, W, 3] -> [B]."""
    targets = images.permute(0, 3, 1, 2).long()  # [B, 3, H, W]
    nll = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(0, 1), reduction="none")  # [B*3, H, W]
    return nll.view(images.shape[0], -1).sum(dim=1)


def bits_per_dim(nats_per_image: torch.Tensor | float, dims: int) -> torch.Tensor | float:
    """Nats per image -> bits per sub-pixel."""
    return nats_per_image / (dims * math.log(2))
