"""WaveNet: gated dilated causal convolutions over a sequence of classes, with cached generation.

Used as the VQ-VAE's decoder (μ-law samples in, 256-way categorical out, conditioned on upsampled
latents and a speaker) and as the prior over code sequences. `forward` is the teacher-forced
pass. Generating one position at a time (cached, one step per layer) is `vqaudio.generation`'s
work: `vqaudio.generation.wavenet_step` describes that step once for every back end.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from vqaudio.models.pruning import (
    PruningSchedule,
    block_grid,
    conv_matrix,
    magnitude_mask,
    mask_conv_weight,
)

HALF_SQRT = math.sqrt(0.5)  # keeps the residual stream's variance from growing layer by layer


class ScalarEmbedding(nn.Module):
    """The input layer for sample values rather than categories: class c stands for the value
    v = 2c / (n - 1) - 1 and enters as v * scale + bias (a 1x1 convolution of the waveform).
    `weight` tabulates it for every class, the layout the cached step reads."""

    def __init__(self, num_classes: int, dim: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.scale = nn.Parameter(torch.randn(dim))
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, classes: torch.Tensor) -> torch.Tensor:
        values = classes.to(self.scale.dtype) * (2.0 / (self.num_classes - 1)) - 1.0
        return values.unsqueeze(-1) * self.scale + self.bias

    @property
    def weight(self) -> torch.Tensor:
        return self(torch.arange(self.num_classes, device=self.scale.device))


class WaveNet(nn.Module):
    """Classes [B, T] -> logits [B, num_classes, T], where output t depends on inputs 0..t only.

    Inputs are the previous positions' classes (the caller shifts targets right by one).
    `cond` is local conditioning at frame rate [B, cond_channels, T / hop]; it is projected
    per layer at frame rate and repeated `hop` times (a 1x1 projection commutes with the
    repetition, so this costs 1/hop of projecting upsampled features). `global_cond`
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
        hop: int = 1,
        mixtures: int = 0,
        pruning: PruningSchedule | None = None,
    ) -> None:
        """`mixtures` > 0: the output is a discretised mixture of that many logistics over
        `num_classes` evenly spaced sample values (3 x mixtures channels), and the input is the
        previous sample's value; 0: `num_classes` logits over categories. `pruning`: make the
        dilated and output convolutions block-sparse while training (`vqaudio.models.pruning`)."""
        super().__init__()
        if gate_channels % 2:
            raise ValueError("gate_channels must be even")
        if layers % stacks:
            raise ValueError("layers must be a multiple of stacks")
        self.num_classes = num_classes
        self.mixtures = mixtures
        self.out_channels = 3 * mixtures if mixtures else num_classes
        # Gumbel variables per sampled position: one per class, or one per component plus the logistic's own
        self.noise_width = mixtures + 1 if mixtures else num_classes
        self.residual_channels = residual_channels
        self.gate_channels = gate_channels
        self.skip_channels = skip_channels
        self.kernel_size = kernel_size
        self.hop = hop  # positions per local-conditioning frame
        self.cond_channels = cond_channels
        self.global_channels = global_channels
        per_stack = layers // stacks
        self.dilations = [2 ** (i % per_stack) for i in range(layers)]
        self.embed: nn.Module = ScalarEmbedding(num_classes, residual_channels) if mixtures else nn.Embedding(num_classes, residual_channels)
        self.convs = nn.ModuleList(
            nn.Conv1d(residual_channels, gate_channels, kernel_size, dilation=d) for d in self.dilations
        )
        self.outs = nn.ModuleList(
            nn.Conv1d(gate_channels // 2, residual_channels + skip_channels, 1) for _ in self.dilations
        )
        self.cond_proj = nn.Conv1d(cond_channels, layers * gate_channels, 1, bias=False) if cond_channels else None
        self.global_proj = nn.Linear(global_channels, layers * gate_channels, bias=False) if global_channels else None
        self.head = nn.Sequential(
            nn.ReLU(), nn.Conv1d(skip_channels, skip_channels, 1), nn.ReLU(), nn.Conv1d(skip_channels, self.out_channels, 1)
        )
        self.pruning = pruning
        # The weights generation computes with ("fp32" or "int8", vqaudio.generation.packed); set
        # after loading (`vqaudio decode --precision`), never saved.
        self.generation_precision = "fp32"
        if pruning is not None:  # block masks, saved with the weights so a resumed run keeps them
            conv_grid = block_grid(kernel_size * residual_channels, gate_channels, pruning.block)
            out_grid = block_grid(gate_channels // 2, residual_channels + skip_channels, pruning.block)
            self.register_buffer("conv_masks", torch.ones(layers, *conv_grid, dtype=torch.bool))
            self.register_buffer("out_masks", torch.ones(layers, *out_grid, dtype=torch.bool))

    @torch.no_grad()
    def after_optimizer_step(self, step: int) -> None:
        """Training calls this after optimiser step `step` (counted from 1): the masks are
        applied to the weights (the step moved pruned ones), then on the schedule's steps they
        drop the smallest of the remaining blocks. Pruned blocks, zero when ranked, never return."""
        if self.pruning is None:
            return
        schedule = self.pruning
        pairs = [(self.convs, self.conv_masks), (self.outs, self.out_masks)]

        def apply() -> None:
            for convs, masks in pairs:
                for index, conv in enumerate(convs):
                    conv.weight.mul_(mask_conv_weight(conv.weight, masks[index], schedule.block))

        apply()
        if schedule.updates_at(step):
            target = schedule.target(step)
            for convs, masks in pairs:
                for index, conv in enumerate(convs):
                    masks[index] = magnitude_mask(conv_matrix(conv.weight), schedule.block, target)
            apply()

    @property
    def device(self) -> torch.device:
        return self.head[1].weight.device

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
            if cond.shape[-1] * self.hop != length:
                raise ValueError(f"{cond.shape[-1]} frames x hop {self.hop} != {length} inputs")
            layer_cond = self.cond_proj(cond)  # [B, layers*gate, frames]
        global_bias = self.global_proj(global_cond) if global_cond is not None else None
        skip = 0
        for index, (conv, out) in enumerate(zip(self.convs, self.outs)):
            pad = (self.kernel_size - 1) * conv.dilation[0]
            a = conv(F.pad(h, (pad, 0)))
            sl = slice(index * gate, (index + 1) * gate)
            if layer_cond is not None:
                frames = layer_cond[:, sl]
                a = a + frames.repeat_interleave(self.hop, dim=2)
            if global_bias is not None:
                a = a + global_bias[:, sl, None]
            z = torch.tanh(a[:, : gate // 2]) * torch.sigmoid(a[:, gate // 2 :])
            o = out(z)
            h = (h + o[:, : self.residual_channels]) * HALF_SQRT
            skip = skip + o[:, self.residual_channels :]
        return self.head(skip)

    # ----- what incremental generation (vqaudio.generation) reads -----

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
