"""A discretised mixture of logistics over 16-bit samples (PixelCNN++, Parallel WaveNet).

Instead of 256 μ-law classes, the WaveNet outputs, per sample, M mixture weights, means and log
scales; the probability of each of the 65,536 sample values is the mixture's mass on that value's
bin (the two end bins take the tails). Samples are classes 0..65535 standing for values evenly
spaced over [-1, 1]. Parameters are channels-first: [B, 3M, *positions] in the order weights,
means, log scales.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

LEVELS = 65536  # 16-bit samples
HALF_BIN = 1.0 / (LEVELS - 1)  # half the distance between neighbouring values
MIN_LOG_SCALE = -7.0  # PixelCNN++'s floor: keeps every bin's mass computable in float32
SILENCE = LEVELS // 2  # the class nearest 0.0


def class_to_value(classes: torch.Tensor) -> torch.Tensor:
    return classes.float() * (2.0 / (LEVELS - 1)) - 1.0


def value_to_class(values: torch.Tensor) -> torch.Tensor:
    return ((values.clamp(-1.0, 1.0) + 1.0) * ((LEVELS - 1) / 2.0)).round().long()


def split(params: torch.Tensor, mixtures: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """[B, 3M, ...] -> (weight logits, means, log scales), each [B, M, ...]."""
    weights, means, log_scales = params.split(mixtures, dim=1)
    return weights, means, log_scales.clamp(min=MIN_LOG_SCALE)


def log_prob(params: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """log p(sample) in nats: params [B, 3M, *positions], classes [B, *positions] -> [B, *positions]."""
    mixtures = params.shape[1] // 3
    weights, means, log_scales = split(params, mixtures)
    x = class_to_value(classes).unsqueeze(1).to(params.dtype)
    centred = x - means
    inv_scale = torch.exp(-log_scales)
    upper = inv_scale * (centred + HALF_BIN)
    lower = inv_scale * (centred - HALF_BIN)
    log_cdf_upper = upper - F.softplus(upper)  # log sigmoid(upper): the lowest value's bin takes the lower tail
    log_survival_lower = -F.softplus(lower)  # log (1 - sigmoid(lower)): the highest value's bin takes the upper tail
    mass = torch.sigmoid(upper) - torch.sigmoid(lower)
    middle = inv_scale * centred
    # Where the bin's mass is too small to subtract accurately, the density at the centre times the width.
    log_density_mid = middle - log_scales - 2.0 * F.softplus(middle) + math.log(2 * HALF_BIN)
    log_mass = torch.where(mass > 1e-5, torch.log(mass.clamp(min=1e-12)), log_density_mid)
    first = (classes == 0).unsqueeze(1)
    last = (classes == LEVELS - 1).unsqueeze(1)
    per_component = torch.where(first, log_cdf_upper, torch.where(last, log_survival_lower, log_mass))
    return torch.logsumexp(per_component + F.log_softmax(weights, dim=1), dim=1)


def sample(params: torch.Tensor, gumbel: torch.Tensor, inv_temperature: float | torch.Tensor, greedy: bool = False) -> torch.Tensor:
    """One sample class per row: params [B, 3M], noise [B, M + 1] of standard Gumbel variables
    (the engine's noise). The first M choose the component (Gumbel-max, weights sharpened by
    1/temperature); the last, turned back into a uniform u, gives the logistic's draw
    mean + scale x temperature x log(u / (1 - u)). Greedy: the likeliest component's mean."""
    mixtures = params.shape[1] // 3
    weights, means, log_scales = split(params.double(), mixtures)
    if greedy:
        chosen = weights.argmax(dim=1, keepdim=True)
        return value_to_class(means.gather(1, chosen).squeeze(1))
    noise = gumbel.double()
    # 1/temperature as the float32 every back end holds it (the numba kernel's argument, the CUDA graph's tensor)
    inv = torch.as_tensor(inv_temperature, dtype=torch.float32, device=params.device).double()
    chosen = (weights * inv + noise[:, :mixtures]).argmax(dim=1, keepdim=True)
    u = torch.exp(-torch.exp(-noise[:, mixtures])).clamp(1e-5, 1.0 - 1e-5)
    spread = torch.exp(log_scales.gather(1, chosen).squeeze(1)) / inv
    return value_to_class(means.gather(1, chosen).squeeze(1) + spread * (torch.log(u) - torch.log1p(-u)))
