"""Gated PixelCNN (van den Oord et al. 2016, "Conditional Image Generation with PixelCNN Decoders")
over a map of discrete codes, as the VQ-VAE paper's image prior.

Two stacks remove the blind spot of the original PixelCNN: the vertical stack sees every row
above, the horizontal stack the pixels to the left in the current row, and the vertical stack
feeds the horizontal one (shifted down a row so that no information from the current row leaks).
Units are gated (tanh * sigmoid); the horizontal stack is residual; a class label adds a learned
bias to every gate. Output (i, j) depends on inputs (i', j') with i' < i, or i' == i and j' < j.

For VQ-VAE-2's priors (Razavi et al. 2019) the same network takes three options: causal
multi-head self-attention on the horizontal stream every few layers (the top prior: every
position can look at everything generated before it, not just a receptive field), dropout on
the residual branches and in the attention, and a spatial conditioning map added to every gate
(the bottom prior, conditioned on the top codes through `ConditionStack`).
`vqaudio.generation.pixelcnn` draws codes with cached per-row and per-pixel computation.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from vqaudio.models.image_nets import ResidualBlock2d


class GatedLayer(nn.Module):
    def __init__(self, channels: int, kernel: int, num_classes: int, first: bool, condition_channels: int = 0,
                 dropout: float = 0.0) -> None:  # fmt: skip
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
        # A conditioning map (the top codes, for the bottom prior) biases every gate, position by position.
        self.condition = nn.Conv2d(condition_channels, 4 * channels, 1) if condition_channels else None
        self.dropout = nn.Dropout(dropout)

    @staticmethod
    def _gate(x: torch.Tensor) -> torch.Tensor:
        a, b = x.chunk(2, dim=1)
        return torch.tanh(a) * torch.sigmoid(b)

    def biases(self, label: torch.Tensor | None, condition: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The vertical and horizontal gate biases from the label and the conditioning map, or None."""
        total = None
        if self.label_bias is not None and label is not None:
            total = self.label_bias(label)[:, :, None, None]
        if self.condition is not None and condition is not None:
            spatial = self.condition(condition)
            total = spatial if total is None else total + spatial
        return None if total is None else total.chunk(2, dim=1)

    def combine(
        self, v_out: torch.Tensor, h_conv: torch.Tensor, v_above: torch.Tensor, h: torch.Tensor,
        bias: tuple[torch.Tensor, torch.Tensor] | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
        """Gate both stacks: `v_above` is the vertical pre-activation of the row above (zeros for row 0)."""
        h_out = h_conv + self.vertical_to_horizontal(v_above)
        if bias is not None:
            v_out, h_out = v_out + bias[0], h_out + bias[1]
        v_next = self._gate(v_out)
        h_gated = self.dropout(self.horizontal_out(self._gate(h_out)))
        return v_next, (h_gated if self.first else h + h_gated)

    def forward(
        self, v: torch.Tensor, h: torch.Tensor, label: torch.Tensor | None, condition: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
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
        return self.combine(v_out, h_conv, v_shifted, h, self.biases(label, condition))


def position_encoding(channels: int, height: int, width: int, device: torch.device) -> torch.Tensor:
    """Sinusoids of the row and the column, [channels, height, width]: attention alone has no sense
    of place, and a fixed encoding works for any map size."""
    quarter = max(1, channels // 4)
    frequencies = torch.exp(-math.log(1000.0) * torch.arange(quarter, device=device) / quarter)
    rows = torch.arange(height, device=device)[:, None] * frequencies  # [H, quarter]
    cols = torch.arange(width, device=device)[:, None] * frequencies  # [W, quarter]
    parts = [
        rows.sin()[:, None, :].expand(height, width, quarter), rows.cos()[:, None, :].expand(height, width, quarter),
        cols.sin()[None, :, :].expand(height, width, quarter), cols.cos()[None, :, :].expand(height, width, quarter),
    ]  # fmt: skip
    encoding = torch.cat(parts, dim=-1)[:, :, :channels]
    if encoding.shape[-1] < channels:
        encoding = F.pad(encoding, (0, channels - encoding.shape[-1]))
    return encoding.permute(2, 0, 1)


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention over positions in raster order; position p attends to q <= p.

    Applied to the horizontal stream, whose value at q depends only on codes before q, so the
    output at p still depends only on codes before p."""

    def __init__(self, channels: int, heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if channels % heads:
            raise ValueError(f"attention: {channels} channels do not split into {heads} heads")
        self.heads = heads
        self.norm = nn.LayerNorm(channels)  # per position: statistics over space would see the future
        self.qkv = nn.Linear(channels, 3 * channels)
        self.out = nn.Linear(channels, channels)
        self.dropout = dropout
        self.out_dropout = nn.Dropout(dropout)

    def project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x [B, N, C] (already normalised and position-encoded) -> q, k, v [B, heads, N, C / heads]."""
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        split = lambda t: t.view(t.shape[0], t.shape[1], self.heads, -1).transpose(1, 2)  # noqa: E731
        return split(q), split(k), split(v)

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool) -> torch.Tensor:
        p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=causal)
        return self.out_dropout(self.out(y.transpose(1, 2).flatten(2)))

    def normalise(self, h: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """h [B, C, ...] at `positions` ([C, ...] encodings) -> [B, N, C], normalised per position."""
        x = self.norm(h.flatten(2).transpose(1, 2))
        return x + positions.flatten(1).t()

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        b, c, height, width = h.shape
        x = self.normalise(h, position_encoding(c, height, width, h.device))
        y = self.attend(*self.project(x), causal=True)
        return h + y.transpose(1, 2).reshape(b, c, height, width)


class ConditionStack(nn.Module):
    """Top codes [B, h, w] -> conditioning features [B, channels, h * scale, w * scale]: an
    embedding, a deep residual stack and a transposed-convolution upsampling (VQ-VAE-2's bottom prior)."""

    def __init__(self, codebook_size: int, channels: int, blocks: int, scale: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(codebook_size, channels)
        self.blocks = nn.Sequential(*[ResidualBlock2d(channels) for _ in range(blocks)], nn.ReLU())
        ups: list[nn.Module] = []
        while scale > 1:
            ups += [nn.ConvTranspose2d(channels, channels, 4, stride=2, padding=1), nn.ReLU()]
            scale //= 2
        self.upsample = nn.Sequential(*ups)

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        return self.upsample(self.blocks(self.embed(codes).permute(0, 3, 1, 2)))


class GatedPixelCNN(nn.Module):
    """Codes [B, H, W] (and labels [B], and top codes for a conditioned prior) -> logits [B, K, H, W]
    for p(code_ij | codes before ij, label, condition)."""

    def __init__(
        self, codebook_size: int, channels: int = 128, layers: int = 15, kernel: int = 5, num_classes: int = 0,
        attention_every: int = 0, heads: int = 4, dropout: float = 0.0,
        condition_codes: int = 0, condition_blocks: int = 0, condition_scale: int = 1,
    ) -> None:  # fmt: skip
        super().__init__()
        if kernel % 2 == 0:
            raise ValueError("kernel must be odd")
        self.codebook_size = codebook_size
        self.embed = nn.Embedding(codebook_size, channels)
        conditioned = channels if condition_codes else 0
        self.layers = nn.ModuleList(
            GatedLayer(channels, kernel, num_classes, i == 0, conditioned, dropout) for i in range(layers)
        )
        # attention after every `attention_every`-th gated layer
        self.attention = nn.ModuleDict(
            {str(i): CausalSelfAttention(channels, heads, dropout) for i in range(layers)
             if attention_every and (i + 1) % attention_every == 0}
        )  # fmt: skip
        self.condition_stack = (
            ConditionStack(condition_codes, channels, condition_blocks, condition_scale) if condition_codes else None
        )
        self.head = nn.Sequential(nn.ReLU(), nn.Conv2d(channels, channels, 1), nn.ReLU(), nn.Conv2d(channels, codebook_size, 1))

    def condition_features(self, condition: torch.Tensor | None) -> torch.Tensor | None:
        """The conditioning map from top codes (None for an unconditioned prior)."""
        if self.condition_stack is None:
            return None
        if condition is None:
            raise ValueError("this prior is conditioned on top codes: pass them")
        return self.condition_stack(condition)

    def forward(self, codes: torch.Tensor, label: torch.Tensor | None = None, condition: torch.Tensor | None = None) -> torch.Tensor:
        return self.forward_embedded(self.embed(codes).permute(0, 3, 1, 2), label, self.condition_features(condition))

    def forward_embedded(
        self, x: torch.Tensor, label: torch.Tensor | None = None, features: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The same on embedded codes [B, channels, H, W] (what the receptive-field test
        differentiates) and conditioning features (from `condition_features`)."""
        # The vertical stack may see the current row: it only reaches the horizontal stack (and
        # so the output) shifted down by one row.
        v, h = x, x
        for index, layer in enumerate(self.layers):
            v, h = layer(v, h, label, features)
            if str(index) in self.attention:
                h = self.attention[str(index)](h)
        return self.head(h)


class PixelCNNPrior(nn.Module):
    """The training-loop face of the PixelCNN: summed nats and counts, reported as bits per code."""

    def __init__(self, net: GatedPixelCNN) -> None:
        super().__init__()
        self.net = net

    def training_step(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        codes, labels = batch["codes"], batch["labels"]
        nats = F.cross_entropy(self.net(codes, labels, batch.get("condition")).float(), codes, reduction="sum")
        count = torch.tensor(float(codes.numel()), device=codes.device)
        loss = nats / count
        return loss, {"loss": loss.detach(), "nats": nats.detach().reshape(1), "codes": count.reshape(1)}

    @staticmethod
    def summarize_metrics(values: dict[str, torch.Tensor | float]) -> dict[str, float]:
        result = {k: float(v) for k, v in values.items() if k not in ("nats", "codes")}
        if "nats" in values:
            result["bits_per_code"] = float(torch.as_tensor(values["nats"]).sum()) / float(
                torch.as_tensor(values["codes"]).sum()
            ) / math.log(2)
        return result
