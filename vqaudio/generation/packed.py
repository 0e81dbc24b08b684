"""The fused kernel's compact weight formats: block-sparse rows, and int8 with per-channel scales.

A WaveNet layer's two matrices (`wavenet_step`'s input-major [kernel * residual, gate] and
[gate / 2, residual + skip]) are stored as one flat list of blocks of `width` consecutive
outputs of one input, row after row; blocks that are all zero are left out, so a decoder pruned in blocks of 1 x width
(`vqaudio.models.pruning`) costs its density. The values are float32, or int8 with one scale per
output channel (symmetric: scale = max |w| / 127 over the channel's inputs), which quarters the
bytes read per sample; the kernel accumulates in float32 and scales each output once.

`int8_copy` is the same rounding applied to a copy of the model: the float network whose
teacher-forced pass the int8 kernel reproduces (within float32 rounding). Generation with
`precision="int8"` runs that network on every back end, so the back ends still agree exactly and
the cost of int8 is a property of the model (its logits against the float32 model's) that
`scripts/bench_generate.py` measures.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Literal, TypeVar

import numpy as np
import torch

from vqaudio.models.pruning import conv_matrix
from vqaudio.models.wavenet import WaveNet

Precision = Literal["fp32", "int8"]
PRECISIONS: tuple[str, ...] = ("fp32", "int8")
M = TypeVar("M", bound=torch.nn.Module)
WIDTHS = (16, 8, 4, 2, 1)  # output block widths, the widest that tiles both matrices is used


@dataclass
class BlockRows:
    """Every layer's matrix [layers, inputs, outputs] as a flat list of non-zero output blocks."""

    start: np.ndarray  # [layers + 1] int64: layer l's blocks are start[l] .. start[l + 1] - 1
    rows: np.ndarray  # [blocks] uint32: the block's input row (unsigned: no negative-index check when read)
    cols: np.ndarray  # [blocks] uint32: the block's first output column / width
    vals: np.ndarray  # [blocks, width] float32 or int8
    scale: np.ndarray  # [layers, outputs] float32 for int8 values; [layers, 0] for float32 ones (unscaled)


def int8_scales(matrices: torch.Tensor) -> torch.Tensor:
    """Per-output-channel scales of [..., inputs, outputs] matrices: max |w| / 127 (1 for a zero channel)."""
    peak = matrices.detach().abs().amax(dim=-2, keepdim=True)
    return torch.where(peak > 0, peak / 127.0, torch.ones_like(peak))


def int8_round(matrices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(int8 values, scales) of [..., inputs, outputs] matrices."""
    scale = int8_scales(matrices)
    return torch.round(matrices.detach() / scale).clamp_(-127, 127).to(torch.int8), scale


def block_width(*outputs: int, preferred: int | None = None) -> int:
    """The output block width: the pruning block's when given, else the widest that tiles every matrix."""
    if preferred is not None and all(n % preferred == 0 for n in outputs):
        return preferred
    return next(w for w in WIDTHS if all(n % w == 0 for n in outputs))


def pack(matrices: torch.Tensor, width: int, precision: Precision) -> BlockRows:
    """[layers, inputs, outputs] float matrices -> block rows, leaving out all-zero blocks."""
    layers, inputs, outputs = matrices.shape
    if precision == "int8":
        values, scale = int8_round(matrices)
        values, scale = values.numpy(), scale[:, 0].float().numpy()
    else:
        values = matrices.detach().float().numpy()
        scale = np.ones((layers, 0), dtype=np.float32)
    blocks = values.reshape(layers, inputs, outputs // width, width)
    keep = np.any(blocks != 0, axis=-1)  # [layers, inputs, outputs / width]
    layer, rows, cols = np.nonzero(keep)  # layer by layer, then input row by input row
    start = np.concatenate([[0], np.cumsum(keep.reshape(layers, -1).sum(axis=1))]).astype(np.int64)
    return BlockRows(
        start, rows.astype(np.uint32), cols.astype(np.uint32), np.ascontiguousarray(blocks[keep]),
        np.ascontiguousarray(scale, dtype=np.float32),
    )  # fmt: skip


@torch.no_grad()
def int8_copy(module: M) -> M:
    """A copy of `module` in which every WaveNet's dilated and output convolutions hold their
    int8-rounded values (per output channel, as `pack` rounds them): what `precision="int8"`
    generates with, and whose likelihood `vqaudio eval --precision int8` reports."""
    rounded = copy.deepcopy(module)
    for net in rounded.modules():
        if not isinstance(net, WaveNet):
            continue
        for conv in [*net.convs, *net.outs]:
            weight = conv.weight  # [out, in, kernel]: the scale is per output channel, over in x kernel
            values, scale = int8_round(conv_matrix(weight))
            conv.weight.copy_((values.float() * scale).reshape(weight.shape[2], weight.shape[1], weight.shape[0]).permute(2, 1, 0))
    return rounded


def set_precision(model: torch.nn.Module, precision: Precision) -> None:
    """Generate with `precision` weights in every WaveNet inside `model` (a decoder, a prior)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    for module in model.modules():
        if isinstance(module, WaveNet):
            module.generation_precision = precision
