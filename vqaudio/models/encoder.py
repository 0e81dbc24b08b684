"""1-D encoder: strided convolutions (each halves the rate) followed by dilated residual layers."""

from __future__ import annotations

import torch
from torch import nn


class DilatedResidual(nn.Module):
    """ReLU -> dilated conv (kernel 3) -> ReLU -> 1x1 conv, added back to the input."""

    def __init__(self, channels: int, dilation: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.ReLU(),
            nn.Conv1d(channels, channels, 3, padding=dilation, dilation=dilation),
            nn.ReLU(),
            nn.Conv1d(channels, channels, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


class AudioEncoder(nn.Module):
    """Waveform [B, 1, T] -> latents [B, D, T / 2**downsample_layers]. With `in_channels` > 1 it
    downsamples a feature sequence instead (the top level of a two-level model).

    Each downsampling layer is a stride-2 convolution (window 4 in the paper); with padding
    (kernel - 2) / 2 a length divisible by the hop maps to exactly T / hop latents.
    """

    def __init__(
        self,
        channels: int,
        latent_dim: int,
        downsample_layers: int = 6,
        kernel_size: int = 4,
        residual_layers: int = 2,
        in_channels: int = 1,
    ) -> None:
        super().__init__()
        if kernel_size % 2:
            raise ValueError("the encoder's kernel_size must be even so stride 2 halves the length exactly")
        layers: list[nn.Module] = []
        self.in_channels = in_channels
        for _ in range(downsample_layers):
            layers += [nn.Conv1d(in_channels, channels, kernel_size, stride=2, padding=(kernel_size - 2) // 2), nn.ReLU()]
            in_channels = channels
        if downsample_layers == 0:
            layers += [nn.Conv1d(self.in_channels, channels, 3, padding=1), nn.ReLU()]
        layers += [DilatedResidual(channels, 3**i) for i in range(residual_layers)]
        layers += [nn.ReLU(), nn.Conv1d(channels, latent_dim, 1)]
        self.net = nn.Sequential(*layers)
        self.hop = 2**downsample_layers
        # Latent frames on each side that one output frame can depend on (a safe upper bound):
        # the strided stack spans sum (k-1) 2^l input samples, each residual layer +-3^i frames.
        strided_span = sum((kernel_size - 1) * 2**layer for layer in range(downsample_layers)) + 2
        self.context_frames = -(-strided_span // self.hop) + sum(3**i for i in range(residual_layers)) + 1
        for module in self.modules():
            if isinstance(module, nn.Conv1d):
                # He initialisation keeps the activations' spread through the ReLU stack; PyTorch's
                # default shrinks it layer by layer until every latent vector is nearly the same
                # and all of them fall on one code.
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
                nn.init.zeros_(module.bias)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        if audio.dim() != 3 or audio.shape[1] != self.in_channels:
            raise ValueError(f"expected input of shape [B, {self.in_channels}, T], got {tuple(audio.shape)}")
        if audio.shape[-1] % self.hop:
            raise ValueError(f"audio length {audio.shape[-1]} is not a multiple of the hop {self.hop}")
        return self.net(audio)
