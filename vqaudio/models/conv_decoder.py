"""A feed-forward waveform decoder: the mirror of the encoder, as SoundStream, EnCodec and DAC decode.

Code-rate features go through a convolution, then one block per upsampling stride: the
activation, an upsampling convolution that halves the channels, and three residual units with
dilations 1, 3 and 9. A last convolution and tanh give the waveform, all of it in one pass.
Every convolution is weight-normalised. The speaker enters every block through a learned
projection added over time, so decoding codes with another speaker's id converts the voice.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

DILATIONS = (1, 3, 9)


def wn_conv(in_channels: int, out_channels: int, kernel_size: int, dilation: int = 1) -> nn.Module:
    """A 'same'-length weight-normalised convolution (odd kernel)."""
    return weight_norm(nn.Conv1d(in_channels, out_channels, kernel_size, dilation=dilation, padding=dilation * (kernel_size - 1) // 2))


class Snake(nn.Module):
    """x + sin²(αx) / α with a learned α per channel (Ziyin et al. 2020, as DAC uses it): a
    periodic bias that helps a convolutional decoder make pitched, periodic output."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(1, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_inference_mode_enabled():  # one buffer instead of four: decoding is memory-bound here
            out = torch.mul(x, self.alpha).sin_()
            return out.mul_(out).mul_((self.alpha + 1e-9).reciprocal()).add_(x)
        return x + torch.sin(self.alpha * x).pow(2) / (self.alpha + 1e-9)


def activation(kind: str, channels: int) -> nn.Module:
    if kind == "snake":
        return Snake(channels)
    if kind == "elu":
        return nn.ELU()
    raise ValueError(f"unknown activation {kind!r} (snake or elu)")


class ResidualUnit(nn.Module):
    """act -> dilated convolution -> act -> 1x1 convolution, added back to the input."""

    def __init__(self, channels: int, dilation: int, kernel_size: int, act: str) -> None:
        super().__init__()
        self.block = nn.Sequential(
            activation(act, channels),
            wn_conv(channels, channels, kernel_size, dilation),
            activation(act, channels),
            wn_conv(channels, channels, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


class Upsample(nn.Module):
    """[B, C_in, T] -> [B, C_out, T * stride].

    `subpixel`: a kernel-3 convolution makes `stride` output channels per output channel, which
    are interleaved in time (no checkerboard artefacts). `transposed`: a transposed convolution
    with kernel 2 x stride (even strides, so the length is exactly T x stride)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, kind: str) -> None:
        super().__init__()
        self.stride = stride
        self.kind = kind
        self.out_channels = out_channels
        if kind == "subpixel":
            self.conv = wn_conv(in_channels, out_channels * stride, 3)
        elif kind == "transposed":
            if stride % 2:
                raise ValueError(f"a transposed upsampling needs an even stride, not {stride}")
            self.conv = weight_norm(nn.ConvTranspose1d(in_channels, out_channels, 2 * stride, stride=stride, padding=stride // 2))
        else:
            raise ValueError(f"unknown upsampling {kind!r} (subpixel or transposed)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        if self.kind == "subpixel":
            batch, _, length = y.shape
            y = y.view(batch, self.out_channels, self.stride, length).transpose(2, 3).reshape(batch, self.out_channels, length * self.stride)
        return y


class ConvDecoder(nn.Module):
    """Features [B, in_channels, F] (and a speaker vector [B, global_channels]) -> waveform [B, F * hop]
    in [-1, 1], where hop is the product of `strides`."""

    def __init__(
        self,
        in_channels: int,
        channels: int,
        strides: list[int],
        global_channels: int = 0,
        kernel_size: int = 7,
        act: str = "snake",
        upsample: str = "subpixel",
        min_channels: int = 8,
    ) -> None:
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError("the conv decoder's kernel_size must be odd")
        self.strides = list(strides)
        self.hop = math.prod(self.strides)
        self.global_channels = global_channels
        self.kernel_size = kernel_size
        self.input = wn_conv(in_channels, channels, kernel_size)
        self.blocks = nn.ModuleList()
        self.speaker_projections = nn.ModuleList()
        width = channels
        for stride in self.strides:
            out = max(min_channels, width // 2)
            layers = [activation(act, width), Upsample(width, out, stride, upsample)]
            layers += [ResidualUnit(out, d, kernel_size, act) for d in DILATIONS]
            self.blocks.append(nn.Sequential(*layers))
            if global_channels:
                self.speaker_projections.append(nn.Linear(global_channels, width))
            width = out
        self.output = nn.Sequential(activation(act, width), wn_conv(width, 1, kernel_size), nn.Tanh())
        self.context_frames = self._context_frames()

    def _context_frames(self) -> int:
        """Code frames on each side that one frame's output depends on (a safe upper bound): each
        convolution's reach, in positions at its own rate, divided by that rate's positions per frame."""
        half = (self.kernel_size - 1) // 2
        reach = float(half)  # the input convolution, at the frame rate
        rate = 1
        for stride in self.strides:
            reach += 1.0 / rate  # the upsampling convolution's neighbours, at the lower rate
            rate *= stride
            reach += sum(half * d for d in DILATIONS) / rate
        reach += half / rate  # the output convolution
        return math.ceil(reach) + 1

    def forward(self, features: torch.Tensor, global_cond: torch.Tensor | None = None) -> torch.Tensor:
        x = self.input(features)
        for index, block in enumerate(self.blocks):
            if self.global_channels:
                assert global_cond is not None, "this decoder is conditioned on a speaker"
                x = x + self.speaker_projections[index](global_cond).unsqueeze(-1)
            x = block(x)
        return self.output(x).squeeze(1)


def default_strides(hop: int) -> list[int]:
    """Upsampling factors for a power-of-two hop: fours, then a two if one is left (64 -> 4, 4, 4)."""
    strides = []
    while hop % 4 == 0 and hop > 1:
        strides.append(4)
        hop //= 4
    if hop > 1:
        strides.append(hop)
    return strides
