"""Drawing code maps from a gated PixelCNN with cached computation, not a full pass per position.

A full pass per position costs H*W passes over the whole map (rosinality's sampler does this,
and it is why VQ-VAE-2 sampling is slow). Here each position costs one column of work:

- the vertical stack of row i depends only on rows <= i, so it is computed once per finished
  row, from a window of the rows above kept per layer;
- the horizontal stack at (i, j) needs only columns j - k/2 .. j of its input row, kept per
  layer for the current row;
- each attention layer keeps the keys and values of every position so far (a KV cache), so a new
  position attends to them without recomputing them;
- the label and conditioning biases (the top codes' features) are computed once.

`tests/test_pixelcnn.py` checks that the logits at every position equal the full forward pass.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from vqaudio.models.pixelcnn import GatedLayer, GatedPixelCNN, position_encoding


def _at(bias: torch.Tensor, i: int, j: int) -> torch.Tensor:
    """A gate bias at (i, j) as [B, channels, 1, 1] (label biases are the same everywhere)."""
    if bias.shape[-1] == 1 and bias.shape[-2] == 1:
        return bias
    return bias[:, :, i : i + 1, j : j + 1]


class _PixelWeights:
    """A layer's per-pixel convolutions as matrices: at one position a 1 x (k/2 + 1) convolution
    and the 1x1 ones are matrix products, far cheaper than convolution calls on 1-pixel inputs."""

    def __init__(self, layer: GatedLayer) -> None:
        self.half = layer.kernel // 2
        self.first = layer.first
        self.horizontal = (layer.horizontal.weight.flatten(1), layer.horizontal.bias)  # [2C, C * (half + 1)]
        self.to_horizontal = (layer.vertical_to_horizontal.weight.flatten(1), layer.vertical_to_horizontal.bias)
        self.out = (layer.horizontal_out.weight.flatten(1), layer.horizontal_out.bias)

    def horizontal_at(self, padded_row: torch.Tensor, j: int) -> torch.Tensor:
        """The horizontal convolution at column j, from the row padded on the left by half + 1
        [B, C, W + half + 1] -> [B, 2C]. The first layer sees columns j - half - 1 .. j - 1, the
        others j - half .. j."""
        start = j if self.first else j + 1
        window = padded_row[:, :, start : start + self.half + 1]  # [B, C, half + 1], channel-major like the weight
        return F.linear(window.flatten(1), *self.horizontal)


@torch.no_grad()
def sample_pixelcnn(
    net: GatedPixelCNN,
    labels: torch.Tensor,
    height: int,
    width: int,
    condition: torch.Tensor | None = None,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
    on_row: Callable[[int], None] | None = None,
    keep_logits: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Codes [B, height, width] in raster order (and, with `keep_logits`, the logits [B, K, H, W]
    each position was drawn from). `condition`: top codes for a conditioned (bottom) prior."""
    if net.training:
        raise ValueError("sample from a PixelCNN in eval mode (dropout off)")
    batch, device = labels.shape[0], labels.device
    channels = net.embed.embedding_dim
    layers = list(net.layers)
    features = net.condition_features(condition)
    biases = [layer.biases(labels, features) for layer in layers]
    positions = position_encoding(channels, height, width, device) if len(net.attention) else None
    codes = torch.zeros(batch, height, width, dtype=torch.long, device=device)
    all_logits = torch.zeros(batch, net.codebook_size, height, width, device=device) if keep_logits else None
    # Vertical stack, row by row: each layer's input rows and its pre-activation outputs.
    v_inputs = [torch.zeros(batch, channels, height, width, device=device) for _ in layers]
    v_pre = [torch.zeros(batch, 2 * channels, height, width, device=device) for _ in layers]
    caches: dict[str, tuple[list[torch.Tensor], list[torch.Tensor]]] = {key: ([], []) for key in net.attention}
    weights = [_PixelWeights(layer) for layer in layers]
    lead = max(w.half for w in weights) + 1  # left padding kept on every row buffer
    zeros_above = torch.zeros(batch, 2 * channels, device=device)
    for i in range(height):
        # Horizontal stack for this row: h_rows[l] is layer l's input row (h_rows[0]: the codes so
        # far), stored with `lead` zero columns on the left so that windows never need padding.
        h_rows = [torch.zeros(batch, channels, lead + width, device=device) for _ in range(len(layers) + 1)]
        for j in range(width):
            for index, (layer, w) in enumerate(zip(layers, weights)):
                row = h_rows[index][:, :, lead - w.half - 1 :]
                above = v_pre[index][:, :, i - 1, j] if i > 0 else zeros_above
                h_out = w.horizontal_at(row, j) + F.linear(above, *w.to_horizontal)
                if biases[index] is not None:
                    h_out = h_out + _at(biases[index][1], i, j)[:, :, 0, 0]
                h_gated = F.linear(GatedLayer._gate(h_out), *w.out)
                h = h_gated if layer.first else h_rows[index][:, :, lead + j] + h_gated
                key = str(index)
                if key in net.attention:
                    h = _attend_cached(net.attention[key], h, positions[:, i, j], caches[key])
                h_rows[index + 1][:, :, lead + j] = h
            logits = net.head(h_rows[-1][:, :, lead + j, None, None])[:, :, 0, 0].float()
            if all_logits is not None:
                all_logits[:, :, i, j] = logits
            chosen = draw_codes(logits, temperature, generator)
            codes[:, i, j] = chosen
            h_rows[0][:, :, lead + j] = net.embed(chosen)
        _advance_vertical(layers, biases, v_inputs, v_pre, net.embed(codes[:, i]).permute(0, 2, 1), i)
        if on_row is not None:
            on_row(i + 1)
    return codes, all_logits


def draw_codes(logits: torch.Tensor, temperature: float, generator: torch.Generator | None) -> torch.Tensor:
    """One code per row of `logits` [B, K]: the most likely at temperature 0, otherwise a draw from
    the softmax at that temperature (on the CPU, so a seeded generator repeats on any device)."""
    if temperature <= 0:
        return logits.argmax(dim=1)
    probs = torch.softmax(logits / temperature, dim=1).cpu()
    return torch.multinomial(probs, 1, generator=generator)[:, 0].to(logits.device)


def _attend_cached(attention, h: torch.Tensor, position: torch.Tensor,
                   cache: tuple[list[torch.Tensor], list[torch.Tensor]]) -> torch.Tensor:  # fmt: skip
    """One new position [B, C] through a causal attention layer, its key and value added to the cache."""
    x = attention.norm(h[:, None, :]) + position[None, None, :]
    q, k, v = attention.project(x)
    cache[0].append(k)
    cache[1].append(v)
    y = attention.attend(q, torch.cat(cache[0], dim=2), torch.cat(cache[1], dim=2), causal=False)
    return h + y[:, 0, :]


def _advance_vertical(layers: list[GatedLayer], biases, v_inputs: list[torch.Tensor], v_pre: list[torch.Tensor],
                      row_codes: torch.Tensor, i: int) -> None:  # fmt: skip
    """Once row i's codes are known: every layer's vertical pre-activation for row i (what the
    horizontal stack of row i + 1 sees) and the gated vertical input of the next layer."""
    v_inputs[0][:, :, i] = row_codes
    for index, layer in enumerate(layers):
        half = layer.kernel // 2
        window = F.pad(v_inputs[index], (half, half, half, 0))[:, :, i : i + half + 1]  # rows i - half .. i
        out = layer.vertical(window)  # [B, 2C, 1, W]
        v_pre[index][:, :, i : i + 1] = out
        if biases[index] is not None:
            bias = biases[index][0]
            out = out + (bias if bias.shape[-2] == 1 else bias[:, :, i : i + 1])
        if index + 1 < len(layers):
            v_inputs[index + 1][:, :, i : i + 1] = layer._gate(out)


@torch.no_grad()
def sample_image_codes_full(
    prior: GatedPixelCNN, labels: torch.Tensor, height: int, width: int, temperature: float = 1.0,
    generator: torch.Generator | None = None, condition: torch.Tensor | None = None,
) -> torch.Tensor:  # fmt: skip
    """The reference sampler: a full forward pass per position (height * width passes). Kept to
    check the cached sampler and to time it against."""
    codes = torch.zeros(labels.shape[0], height, width, dtype=torch.long, device=labels.device)
    for i in range(height):
        for j in range(width):
            codes[:, i, j] = draw_codes(prior(codes, labels, condition)[:, :, i, j].float(), temperature, generator)
    return codes
