"""The top level of a two-level audio VQ-VAE (VQ-VAE-2 on waveforms, as Jukebox does).

It downsamples the bottom encoder's latents further, quantises them with its own codebook, and
brings the chosen vectors back to the bottom code rate. Those features condition both the bottom
quantiser's input (the bottom encoder "conditioned on the top", as in Razavi et al. 2019) and the
WaveNet decoder, which therefore sees coarse and fine codes together.
"""

from __future__ import annotations

import torch
from torch import nn

from vqaudio.models.encoder import AudioEncoder
from vqaudio.models.residual_quantizer import ResidualVectorQuantizer


class TopLevel(nn.Module):
    """Bottom latents [B, D, F] -> top codes [B, F / ratio] -> features at the bottom rate [B, D, F]."""

    # Bottom frames on each side that one expanded frame depends on (the kernel-3 convolution).
    expand_context = 1

    def __init__(
        self,
        bottom_dim: int,
        quantizer: ResidualVectorQuantizer,
        downsample_layers: int,
        channels: int,
        residual_layers: int,
    ) -> None:
        super().__init__()
        self.encoder = AudioEncoder(
            channels, quantizer.dim, downsample_layers, residual_layers=residual_layers, in_channels=bottom_dim
        )
        self.quantizer = quantizer
        self.ratio = 2**downsample_layers
        # Nearest-neighbour repetition, then a convolution at the bottom rate that smooths the steps.
        self.expand_net = nn.Sequential(nn.Conv1d(quantizer.dim, bottom_dim, 3, padding=1), nn.ReLU())
        # How the top's view enters the bottom quantiser's input (added to the bottom latents).
        self.to_bottom = nn.Conv1d(bottom_dim, bottom_dim, 1)

    @property
    def context_frames(self) -> int:
        """Bottom frames on each side that one top code can depend on (a safe upper bound)."""
        return (self.encoder.context_frames + 1) * self.ratio

    def expand(self, top_vectors: torch.Tensor) -> torch.Tensor:
        """Top vectors [B, D_top, F_top] -> features [B, D, F_top * ratio] at the bottom rate."""
        return self.expand_net(top_vectors.repeat_interleave(self.ratio, dim=2))

    def expand_codes(self, top_codes: torch.Tensor, first: int, last: int) -> torch.Tensor:
        """Expanded features for bottom frames [first, last) from top codes [B, 1, F_top], computed
        from the top codes they need only, and equal to the same frames of the whole expansion."""
        ratio, total = self.ratio, top_codes.shape[-1] * self.ratio
        lo, hi = max(0, first - self.expand_context), min(total, last + self.expand_context)
        t0, t1 = lo // ratio, -(-hi // ratio)
        features = self.expand(self.quantizer.lookup(top_codes[..., t0:t1]))
        return features[..., first - t0 * ratio : last - t0 * ratio]
