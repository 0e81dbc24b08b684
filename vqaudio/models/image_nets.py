"""The paper's image encoder and decoder (section 4.2): two stride-2 4x4 convolutions and two
residual 3x3 blocks of 256 hidden units, and the mirror image with transposed convolutions.

Shared by the 2-D VQ-VAE and the VAE baseline, so that the two differ only in their latents.
"""

from __future__ import annotations

from torch import nn


class ResidualBlock2d(nn.Module):
    """x + conv1x1(relu(conv3x3(relu(x)))), as in the paper."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.ReLU(), nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(), nn.Conv2d(channels, channels, 1)
        )

    def forward(self, x):
        return x + self.body(x)


class ImageEncoder(nn.Module):
    """Images [B, 3, H, W] in [-1, 1] -> latents [B, out_channels, H / 4, W / 4]."""

    def __init__(self, out_channels: int, hidden: int = 256, residual_blocks: int = 2) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, hidden, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(hidden, hidden, 4, stride=2, padding=1),
            *[ResidualBlock2d(hidden) for _ in range(residual_blocks)],
            nn.ReLU(),
            nn.Conv2d(hidden, out_channels, 1),
        )

    def forward(self, x):
        return self.net(x)


class ImageDecoder(nn.Module):
    """Latents [B, in_channels, h, w] -> logits [B, 3, 256, 4h, 4w]: a 256-way softmax per sub-pixel,
    so that the likelihood of the 8-bit image (and so bits/dim) is exact, not a density bound."""

    def __init__(self, in_channels: int, hidden: int = 256, residual_blocks: int = 2) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, hidden, 3, padding=1),
            *[ResidualBlock2d(hidden) for _ in range(residual_blocks)],
            nn.ReLU(),
            nn.ConvTranspose2d(hidden, hidden, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.ConvTranspose2d(hidden, 3 * 256, 4, stride=2, padding=1),
        )

    def forward(self, z):
        logits = self.net(z)
        return logits.view(logits.shape[0], 3, 256, *logits.shape[2:])
