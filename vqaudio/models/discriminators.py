"""Discriminators for adversarial training of the conv decoder, as small composable modules.

Each sub-discriminator maps a waveform [B, T] to (logits, feature maps); the feature maps feed
the feature-matching loss. `MultiPeriodDiscriminator` is HiFi-GAN's (the waveform folded into
[T / p, p] so that 2-D convolutions see every p-th sample); `MultiScaleSTFTDiscriminator` is
EnCodec's (2-D convolutions over the complex STFT, real and imaginary parts as channels, at
several window lengths).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

Judgement = tuple[torch.Tensor, list[torch.Tensor]]  # (logits, feature maps)
SLOPE = 0.1  # leaky ReLU


def _widths(base: int, count: int, most: int) -> list[int]:
    return [min(most, base * 4**i) for i in range(count)]


def _judge(convs: nn.ModuleList, post: nn.Module, x: torch.Tensor) -> Judgement:
    """Leaky-ReLU convolutions then the output convolution; every layer's output is a feature map."""
    features = []
    for conv in convs:
        x = F.leaky_relu(conv(x), SLOPE)
        features.append(x)
    x = post(x)
    features.append(x)
    return x.flatten(1), features


class PeriodDiscriminator(nn.Module):
    """One period p: [B, T] -> [B, 1, T / p, p] -> strided 2-D convolutions along time."""

    def __init__(self, period: int, channels: int = 32, max_channels: int = 1024) -> None:
        super().__init__()
        self.period = period
        widths = _widths(channels, 4, max_channels)
        layers = []
        prev = 1
        for width in widths:
            layers.append(weight_norm(nn.Conv2d(prev, width, (5, 1), (3, 1), padding=(2, 0))))
            prev = width
        layers.append(weight_norm(nn.Conv2d(prev, prev, (5, 1), 1, padding=(2, 0))))
        self.convs = nn.ModuleList(layers)
        self.post = weight_norm(nn.Conv2d(prev, 1, (3, 1), 1, padding=(1, 0)))

    def forward(self, audio: torch.Tensor) -> Judgement:
        batch, length = audio.shape
        pad = (-length) % self.period
        if pad:
            audio = F.pad(audio, (0, pad), mode="reflect")
        return _judge(self.convs, self.post, audio.view(batch, 1, -1, self.period))


class MultiPeriodDiscriminator(nn.Module):
    def __init__(self, periods: list[int], channels: int = 32, max_channels: int = 1024) -> None:
        super().__init__()
        self.discriminators = nn.ModuleList(PeriodDiscriminator(p, channels, max_channels) for p in periods)

    def forward(self, audio: torch.Tensor) -> list[Judgement]:
        return [d(audio) for d in self.discriminators]


class STFTDiscriminator(nn.Module):
    """One window length: the complex STFT [B, 2, frames, bins] through 2-D convolutions that
    stride over frequency and dilate over time (1, 2, 4)."""

    def __init__(self, window: int, channels: int = 32) -> None:
        super().__init__()
        self.n_fft = window
        self.hop = window // 4
        self.register_buffer("window", torch.hann_window(window), persistent=False)
        layers = [weight_norm(nn.Conv2d(2, channels, (3, 9), padding=(1, 4)))]
        for dilation in (1, 2, 4):
            layers.append(weight_norm(nn.Conv2d(channels, channels, (3, 9), stride=(1, 2), dilation=(dilation, 1), padding=(dilation, 4))))
        layers.append(weight_norm(nn.Conv2d(channels, channels, (3, 3), padding=(1, 1))))
        self.convs = nn.ModuleList(layers)
        self.post = weight_norm(nn.Conv2d(channels, 1, (3, 3), padding=(1, 1)))

    def forward(self, audio: torch.Tensor) -> Judgement:
        spec = torch.stft(audio.float(), self.n_fft, self.hop, window=self.window, return_complex=True, normalized=True)
        return _judge(self.convs, self.post, torch.view_as_real(spec).permute(0, 3, 2, 1))  # [B, 2, frames, bins]


class MultiScaleSTFTDiscriminator(nn.Module):
    def __init__(self, windows: list[int], channels: int = 32) -> None:
        super().__init__()
        self.discriminators = nn.ModuleList(STFTDiscriminator(w, channels) for w in windows)

    def forward(self, audio: torch.Tensor) -> list[Judgement]:
        return [d(audio) for d in self.discriminators]


class Discriminators(nn.Module):
    """Several multi-discriminators side by side: a waveform -> every sub-discriminator's judgement."""

    def __init__(self, parts: list[nn.Module]) -> None:
        super().__init__()
        self.parts = nn.ModuleList(parts)

    def forward(self, audio: torch.Tensor) -> list[Judgement]:
        return [judgement for part in self.parts for judgement in part(audio)]
