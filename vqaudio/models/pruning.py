"""Block-sparse weights by gradual magnitude pruning (Zhu & Gupta 2017; WaveRNN, Kalchbrenner et al. 2018).

A WaveNet's per-sample cost is its dilated convolutions and 1x1 output convolutions. Seen the way
the generation kernel reads them (`vqaudio.generation.wavenet_step`: input-major matrices
[kernel * residual, gate] and [gate / 2, residual + skip]), each is cut into blocks of
`block = (inputs, outputs)` weights. From step `start` to step `end`, every `every` steps, the
blocks with the smallest L2 norm are set to zero until the fraction

    s(t) = sparsity * (1 - (1 - (t - start) / (end - start)) ** 3)

of each matrix's blocks is zero: fast at first, while the network can still recover, and slowly
near the end. Between updates the mask is re-applied after every optimiser step, so pruned
weights stay exactly zero and the final model's zero blocks are what the kernel skips. Blocks of
1 x 16 (one input, sixteen outputs) are what the kernel's vector loop wants.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class PruningSchedule:
    sparsity: float  # final fraction of zero blocks in every pruned matrix
    block: tuple[int, int]  # (inputs, outputs) of a block, in the generation kernel's layout
    start: int  # first optimiser step that prunes
    end: int  # the step at which `sparsity` is reached
    every: int  # steps between mask updates

    def target(self, step: int) -> float:
        """The fraction of blocks that is zero after optimiser step `step`."""
        if step < self.start:
            return 0.0
        progress = min(1.0, (step - self.start) / max(1, self.end - self.start))
        return self.sparsity * (1.0 - (1.0 - progress) ** 3)

    def updates_at(self, step: int) -> bool:
        return self.start <= step and (step - self.start) % self.every == 0 and step <= self.end + self.every


def conv_matrix(weight: torch.Tensor) -> torch.Tensor:
    """A causal convolution's weight [out, in, kernel] as the kernel's matrix [kernel * in, out],
    oldest tap first (a 1x1 convolution gives [in, out])."""
    return weight.permute(2, 1, 0).reshape(-1, weight.shape[0])


def block_grid(rows: int, cols: int, block: tuple[int, int]) -> tuple[int, int]:
    """How many blocks a [rows, cols] matrix has along each side; ValueError when they do not tile it."""
    if rows % block[0] or cols % block[1]:
        raise ValueError(f"pruning blocks of {block[0]} x {block[1]} do not tile a {rows} x {cols} weight matrix")
    return rows // block[0], cols // block[1]


def block_norms(matrix: torch.Tensor, block: tuple[int, int]) -> torch.Tensor:
    """[rows, cols] -> the L2 norm of every block [rows / block[0], cols / block[1]]."""
    r, c = block_grid(*matrix.shape, block)
    return matrix.reshape(r, block[0], c, block[1]).square().sum(dim=(1, 3)).sqrt()


def magnitude_mask(matrix: torch.Tensor, block: tuple[int, int], sparsity: float) -> torch.Tensor:
    """Keep the blocks with the largest norms: a boolean block mask with round(sparsity x blocks) False."""
    norms = block_norms(matrix.detach().float(), block).flatten()
    drop = int(round(sparsity * norms.numel()))
    keep = torch.ones_like(norms, dtype=torch.bool)
    if drop > 0:
        keep[torch.argsort(norms, stable=True)[:drop]] = False
    return keep.reshape(block_grid(*matrix.shape, block))


def expand(mask: torch.Tensor, block: tuple[int, int]) -> torch.Tensor:
    """A block mask -> an element mask of the matrix's shape."""
    return mask.repeat_interleave(block[0], 0).repeat_interleave(block[1], 1)


def mask_conv_weight(weight: torch.Tensor, mask: torch.Tensor, block: tuple[int, int]) -> torch.Tensor:
    """An element mask in a convolution weight's own layout [out, in, kernel] from its block mask."""
    out, inputs, kernel = weight.shape
    return expand(mask, block).reshape(kernel, inputs, out).permute(2, 1, 0)


def zero_block_fraction(matrix: torch.Tensor, block: tuple[int, int]) -> float:
    """The fraction of a matrix's blocks that are all zero."""
    return float((block_norms(matrix.detach().float(), block) == 0).float().mean())
