"""Gated PixelCNN (van den Oord et al. 2016, "Conditional Image Generation with PixelCNN Decoders")
over a map of discrete codes, as the VQ-VAE paper's image prior.

Two stacks remove the blind spot of the original PixelCNN: the vertical stack sees every row
above, the horizontal stack the pixels to the left in the current row, and the vertical stack
feeds the horizontal one (shifted down a row so that no information from the current row leaks).
Units are gated (tanh * sigmoid); the horizontal stack is residual; a class label adds a learned
bias to every gate. Output (i, j) depends on inputs (i', j') with i' < i, or i' == i and j' < j.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class GatedLayer(nn.Module):
    def __init__(self, channels: int, kernel: int, num_classes: int, first: bool) -> None:
        super().__init__()
        self.channels = channels
        self.kernel = kernel
        self.first = first
        half = kernel // 2
        # Vertical: a (half + 1) x kernel window over the rows above and the current row (made
        # strictly "above" by a one-row shift where it feeds the horizontal stack).
        self.vertical = nn.Conv2d(channels, 2 * channels, (half + 1, kernel))
        self.vertical_to_horizontal = nn.Conv2d(2 * channels, 2 * channels, 1)
        # Horizontal: 1 x (half + 1) over the pixels to the left and (after the first layer) itself.
        self.horizontal = nn.Conv2d(channels, 2 * channels, (1, half + 1))
        self.horizontal_out = nn.Conv2d(channels, channels, 1)
        self.label_bias = nn.Embedding(num_classes, 4 * channels) if num_classes else None

    @staticmethod
    def _gate(x: torch.Tensor) -> torch.Tensor:
        a, b = x.chunk(2, dim=1)
        return torch.tanh(a) * torch.sigmoid(b)

    def forward(self, v: torch.Tensor, h: torch.Tensor, label: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        half = self.kernel // 2
        height, width = v.shape[-2:]
        # Vertical stack: output row i sees input rows i - half .. i.
        v_out = self.vertical(F.pad(v, (half, half, half, 0)))
        # Shift down one row before use by the horizontal stack: row i then sees only rows < i.
        v_shifted = F.pad(v_out, (0, 0, 1, 0))[:, :, :height]
        # Horizontal stack: output column j sees columns j - half .. j (j - half .. j - 1 in the
        # first layer, whose input is the raw map and must not see its own pixel).
        if self.first:  # pad one more on the left and drop the last output: column j sees j - half - 1 .. j - 1
            h_conv = self.horizontal(F.pad(h, (half + 1, 0)))[:, :, :, :width]
        else:
            h_conv = self.horizontal(F.pad(h, (half, 0)))
        h_out = h_conv + self.vertical_to_horizontal(v_shifted)
        if self.label_bias is not None and label is not None:
            bias_v, bias_h = self.label_bias(label)[:, :, None, None].chunk(2, dim=1)
            v_out, h_out = v_out + bias_v, h_out + bias_h
        v_next = self._gate(v_out)
        h_gated = self.horizontal_out(self._gate(h_out))
        h_next = h_gated if self.first else h + h_gated
        return v_next, h_next


class GatedPixelCNN(nn.Module):
    """Codes [B, H, W] (and labels [B]) -> logits [B, K, H, W] for p(code_ij | codes before ij, label)."""

    def __init__(self, num_codes: int, channels: int = 128, layers: int = 15, kernel: int = 5, num_classes: int = 0) -> None:
        super().__init__()
        if kernel % 2 == 0:
            raise ValueError("kernel must be odd")
        self.num_codes = num_codes
        self.embed = nn.Embedding(num_codes, channels)
        self.layers = nn.ModuleList(GatedLayer(channels, kernel, num_classes, first=(i == 0)) for i in range(layers))
        self.head = nn.Sequential(nn.ReLU(), nn.Conv2d(channels, channels, 1), nn.ReLU(), nn.Conv2d(channels, num_codes, 1))

    def forward(self, codes: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:
        return self.forward_embedded(self.embed(codes).permute(0, 3, 1, 2), label)

    def forward_embedded(self, x: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:
        """The same on embedded codes [B, channels, H, W] (what the receptive-field test differentiates)."""
        # The vertical stack may see the current row: it only reaches the horizontal stack (and
        # so the output) shifted down by one row.
        v, h = x, x
        for layer in self.layers:
            v, h = layer(v, h, label)
        return self.head(h)
