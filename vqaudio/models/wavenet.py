"""WaveNet: gated dilated causal convolutions over a sequence of classes, with cached generation.

Used as the VQ-VAE's decoder (μ-law samples in, 256-way categorical out, conditioned on upsampled
latents and a speaker) and, later, as the prior over code sequences. `forward` is the
teacher-forced pass; `start` + `step` generate one position at a time at a cost of one step per
layer, reading earlier activations from per-layer ring buffers instead of recomputing the
receptive field.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

_HALF_SQRT = math.sqrt(0.5)


@dataclass
class IncrementalState:
    """What `step` keeps between positions: each layer's history and the weights laid out for it."""

    buffers: list[torch.Tensor]  # per layer [(kernel-1)*dilation, B, residual], a ring indexed by position
    weights: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]  # per layer (conv W, out W, out b)
    head: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]  # (W1, b1, W2, b2), transposed
    position: int = 0


class WaveNet(nn.Module):
    """Classes [B, T] -> logits [B, num_classes, T], where output t depends on inputs 0..t only.

    Inputs are the previous positions' classes (the caller shifts targets right by one).
    `cond` is local conditioning at frame rate [B, cond_channels, T / cond_hop]; it is projected
    per layer at frame rate and repeated `cond_hop` times (a 1x1 projection commutes with the
    repetition, so this costs 1/cond_hop of projecting upsampled features). `global_cond`
    [B, global_channels] is added to every layer and position.
    """

    def __init__(
        self,
        num_classes: int,
        residual_channels: int = 64,
        gate_channels: int = 128,
        skip_channels: int = 128,
        layers: int = 20,
        stacks: int = 2,
        kernel_size: int = 2,
        cond_channels: int = 0,
        global_channels: int = 0,
        cond_hop: int = 1,
    ) -> None:
        super().__init__()
        if gate_channels % 2:
            raise ValueError("gate_channels must be even")
        if layers % stacks:
            raise ValueError("layers must be a multiple of stacks")
        self.num_classes = num_classes
        self.residual_channels = residual_channels
        self.gate_channels = gate_channels
        self.skip_channels = skip_channels
        self.kernel_size = kernel_size
        self.cond_hop = cond_hop
        per_stack = layers // stacks
        self.dilations = [2 ** (i % per_stack) for i in range(layers)]
        self.embed = nn.Embedding(num_classes, residual_channels)
        self.convs = nn.ModuleList(
            nn.Conv1d(residual_channels, gate_channels, kernel_size, dilation=d) for d in self.dilations
        )
        self.outs = nn.ModuleList(
            nn.Conv1d(gate_channels // 2, residual_channels + skip_channels, 1) for _ in self.dilations
        )
        self.cond_proj = nn.Conv1d(cond_channels, layers * gate_channels, 1, bias=False) if cond_channels else None
        self.global_proj = nn.Linear(global_channels, layers * gate_channels, bias=False) if global_channels else None
        self.head = nn.Sequential(
            nn.ReLU(), nn.Conv1d(skip_channels, skip_channels, 1), nn.ReLU(), nn.Conv1d(skip_channels, num_classes, 1)
        )

    @property
    def receptive_field(self) -> int:
        return 1 + sum((self.kernel_size - 1) * d for d in self.dilations)

    def _check_conditioning(self, cond: torch.Tensor | None, global_cond: torch.Tensor | None) -> None:
        if (cond is None) != (self.cond_proj is None):
            raise ValueError("local conditioning must be given exactly when the model was built with cond_channels")
        if (global_cond is None) != (self.global_proj is None):
            raise ValueError("global conditioning must be given exactly when the model was built with global_channels")

    def forward(
        self,
        inputs: torch.Tensor,
        cond: torch.Tensor | None = None,
        global_cond: torch.Tensor | None = None,
    ) -> torch.Tensor:
        self._check_conditioning(cond, global_cond)
        batch, length = inputs.shape
        gate = self.gate_channels
        h = self.embed(inputs).transpose(1, 2)
        layer_cond = None
        if cond is not None:
            if cond.shape[-1] * self.cond_hop != length:
                raise ValueError(f"{cond.shape[-1]} frames x hop {self.cond_hop} != {length} inputs")
            layer_cond = self.cond_proj(cond)  # [B, layers*gate, frames]
        global_bias = self.global_proj(global_cond) if global_cond is not None else None
        skip = 0
        for index, (conv, out) in enumerate(zip(self.convs, self.outs)):
            pad = (self.kernel_size - 1) * conv.dilation[0]
            a = conv(F.pad(h, (pad, 0)))
            sl = slice(index * gate, (index + 1) * gate)
            if layer_cond is not None:
                frames = layer_cond[:, sl]
                a = a + frames.repeat_interleave(self.cond_hop, dim=2)
            if global_bias is not None:
                a = a + global_bias[:, sl, None]
            z = torch.tanh(a[:, : gate // 2]) * torch.sigmoid(a[:, gate // 2 :])
            o = out(z)
            h = (h + o[:, : self.residual_channels]) * _HALF_SQRT
            skip = skip + o[:, self.residual_channels :]
        return self.head(skip)

    # ----- cached incremental generation (driven by vqaudio.generation.engine) -----

    def frame_bias(self, cond: torch.Tensor | None, global_cond: torch.Tensor | None, batch: int) -> torch.Tensor:
        """Every layer's additive input for a run of frames: conv bias + conditioning projections.

        cond [B, cond_channels, F] -> [B, F, layers*gate]; without local conditioning -> [B, 1, layers*gate].
        """
        self._check_conditioning(cond, global_cond)
        bias = torch.cat([conv.bias for conv in self.convs]).expand(batch, -1)
        if global_cond is not None:
            bias = bias + self.global_proj(global_cond)
        if cond is None:
            return bias[:, None, :].contiguous()
        return (self.cond_proj(cond).transpose(1, 2) + bias[:, None, :]).contiguous()

    def start(self, batch: int) -> IncrementalState:
        """Empty ring buffers (the zero left padding of the full pass) and weights laid out for `step`."""
        device = self.embed.weight.device
        dtype = self.embed.weight.dtype
        buffers = [
            torch.zeros((self.kernel_size - 1) * d, batch, self.residual_channels, device=device, dtype=dtype)
            for d in self.dilations
        ]
        weights = [
            (
                conv.weight.permute(0, 2, 1).reshape(self.gate_channels, -1).t().contiguous(),
                out.weight.squeeze(-1).t().contiguous(),
                out.bias,
            )
            for conv, out in zip(self.convs, self.outs)
        ]
        first, second = self.head[1], self.head[3]
        head = (
            first.weight.squeeze(-1).t().contiguous(),
            first.bias,
            second.weight.squeeze(-1).t().contiguous(),
            second.bias,
        )
        return IncrementalState(buffers, weights, head)

    def step(self, state: IncrementalState, inputs: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """Feed one input class per sequence [B] with this position's `bias` [B, layers*gate]
        (a row of `frame_bias`); return this position's logits [B, classes]."""
        t = state.position
        gate = self.gate_channels
        half = gate // 2
        residual = self.residual_channels
        h = F.embedding(inputs, self.embed.weight)
        skip = None
        for index, (dilation, buffer, (w_conv, w_out, b_out)) in enumerate(
            zip(self.dilations, state.buffers, state.weights)
        ):
            span = buffer.shape[0]
            taps = [buffer[(t - j * dilation) % span] for j in range(self.kernel_size - 1, 0, -1)]
            stacked = torch.cat([*taps, h], dim=1)  # copies the taps before h overwrites the oldest
            buffer[t % span] = h
            a = torch.addmm(bias[:, index * gate : (index + 1) * gate], stacked, w_conv)
            z = torch.tanh(a[:, :half]) * torch.sigmoid(a[:, half:])
            o = torch.addmm(b_out, z, w_out)
            h = (h + o[:, :residual]) * _HALF_SQRT
            skip = o[:, residual:] if skip is None else skip + o[:, residual:]
        state.position = t + 1
        w1, b1, w2, b2 = state.head
        return torch.addmm(b2, torch.relu(torch.addmm(b1, torch.relu(skip), w1)), w2)
