"""One WaveNet position at a time: the one description of the cached step that every back end runs.

Generating position t needs, per layer, the layer's input at t and at the `kernel_size - 1`
earlier taps t - j * dilation. Those earlier inputs sit in a ring buffer per layer, all layers in
one `history` array [B, sum of spans, residual] (layer l owns the `spans[l]` rows from
`offsets[l]`, and position t lives in row `offsets[l] + t % spans[l]`). The weights are laid out
once, input-major, with the oldest tap first and the current input last:

    a  = bias + [taps..., h] @ conv[l]          (conv[l]: [kernel * residual, gate])
    z  = tanh(a[:half]) * sigmoid(a[half:])
    o  = out_b[l] + z @ out_w[l]                (out_w[l]: [gate / 2, residual + skip])
    h  = (h + o[:residual]) * sqrt(1/2);  skip += o[residual:]
    logits = head_b2 + relu(head_b1 + relu(skip) @ head_w1) @ head_w2

`step` below computes this with PyTorch for the plain and CUDA-graph back ends (the position may
be a Python integer or a tensor on the device, which is what a CUDA graph needs); the fused numba
kernel (`fast_cpu`) computes the same on the arrays of `StepWeights.numpy()`. Each back end is
tested equal to `WaveNet.forward`, the teacher-forced pass.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from vqaudio.models import mixture
from vqaudio.models.wavenet import HALF_SQRT, WaveNet


@dataclass
class StepWeights:
    """A WaveNet's weights in the layout of the cached step (see the module's docstring)."""

    embed: torch.Tensor  # [classes, residual]
    conv: torch.Tensor  # [layers, kernel * residual, gate]
    out_w: torch.Tensor  # [layers, gate / 2, residual + skip]
    out_b: torch.Tensor  # [layers, residual + skip]
    head_w1: torch.Tensor  # [skip, skip]
    head_b1: torch.Tensor
    head_w2: torch.Tensor  # [skip, classes]
    head_b2: torch.Tensor
    dilations: list[int]
    kernel_size: int

    @classmethod
    @torch.no_grad()
    def from_wavenet(cls, net: WaveNet) -> StepWeights:
        gate = net.gate_channels
        first, second = net.head[1], net.head[3]
        return cls(
            embed=net.embed.weight.detach(),
            # conv weight [gate, residual, kernel] -> [kernel * residual, gate], oldest tap first
            conv=torch.stack([c.weight.detach().permute(2, 1, 0).reshape(-1, gate) for c in net.convs]),
            out_w=torch.stack([o.weight.detach().squeeze(-1).t() for o in net.outs]),
            out_b=torch.stack([o.bias.detach() for o in net.outs]),
            head_w1=first.weight.detach().squeeze(-1).t().contiguous(),
            head_b1=first.bias.detach(),
            head_w2=second.weight.detach().squeeze(-1).t().contiguous(),
            head_b2=second.bias.detach(),
            dilations=list(net.dilations),
            kernel_size=net.kernel_size,
        )

    @property
    def residual(self) -> int:
        return self.embed.shape[1]

    @property
    def gate(self) -> int:
        return self.conv.shape[2]

    @property
    def classes(self) -> int:
        return self.head_w2.shape[1]

    @property
    def spans(self) -> list[int]:
        return [(self.kernel_size - 1) * d for d in self.dilations]

    @property
    def offsets(self) -> list[int]:
        return [int(x) for x in np.concatenate([[0], np.cumsum(self.spans)[:-1]])]

    def empty_history(self, batch: int) -> torch.Tensor:
        """Zero ring buffers: the zero left padding of the teacher-forced pass."""
        return torch.zeros(batch, sum(self.spans), self.residual, device=self.embed.device, dtype=self.embed.dtype)

    def numpy(self) -> dict[str, np.ndarray]:
        """float32 / int64 C-contiguous arrays for the numba kernel."""

        def arr(t: torch.Tensor) -> np.ndarray:
            return np.ascontiguousarray(t.detach().to("cpu", torch.float32).numpy())

        return {
            "embed": arr(self.embed), "conv_w": arr(self.conv), "out_w": arr(self.out_w), "out_b": arr(self.out_b),
            "head_w1": arr(self.head_w1), "head_b1": arr(self.head_b1), "head_w2": arr(self.head_w2),
            "head_b2": arr(self.head_b2), "dilations": np.array(self.dilations, dtype=np.int64),
            "spans": np.array(self.spans, dtype=np.int64), "offsets": np.array(self.offsets, dtype=np.int64),
        }  # fmt: skip


class RingSlots:
    """Which history rows a position reads and writes, for every layer at once."""

    TABLE_LIMIT = 1 << 16  # positions repeat their rows with the period lcm(spans): tabulate it when small

    def __init__(self, weights: StepWeights) -> None:
        device = weights.embed.device
        k = weights.kernel_size
        self.spans = torch.tensor(weights.spans, device=device)[:, None]
        self.offsets = torch.tensor(weights.offsets, device=device)[:, None]
        # tap j (oldest first) of layer l reads position t - (k - 1 - j) * dilation
        self.delays = torch.tensor([[(k - 1 - j) * d for j in range(k - 1)] for d in weights.dilations], device=device)
        self.period = math.lcm(*weights.spans)
        self.rows: list[tuple[list[list[int]], list[int]]] | None = None
        if self.period <= self.TABLE_LIMIT:
            positions = torch.arange(self.period)[:, None, None]
            read, write = self._read(positions.to(device)).cpu(), self._write(positions.to(device)).cpu()
            self.rows = [(r.tolist(), w[:, 0].tolist()) for r, w in zip(read, write)]

    def _read(self, position: int | torch.Tensor) -> torch.Tensor:
        return self.offsets + torch.remainder(position - self.delays, self.spans)

    def _write(self, position: int | torch.Tensor) -> torch.Tensor:
        return self.offsets + torch.remainder(position + torch.zeros_like(self.spans), self.spans)

    def at(self, position: int | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | tuple[list[list[int]], list[int]]:
        """(rows read [layers][kernel - 1], row written [layers]) at `position`: Python integers
        for a Python position (read as views, the fastest on the CPU), tensors computed on the
        device for a tensor position (as a CUDA graph needs)."""
        if isinstance(position, int) and self.rows is not None:
            return self.rows[position % self.period]
        return self._read(position), self._write(position)


def step(
    w: StepWeights, slots: RingSlots, history: torch.Tensor, position: int | torch.Tensor, inputs: torch.Tensor, bias: torch.Tensor
) -> torch.Tensor:
    """Feed one input class per sequence `inputs` [B] at `position` with that position's layer
    inputs `bias` [B, layers * gate] (a row of `WaveNet.frame_bias`); updates `history` in place
    and returns the position's logits [B, classes]."""
    gate, residual = w.gate, w.residual
    half = gate // 2
    read, write = slots.at(position)
    h = w.embed.index_select(0, inputs)
    batch = h.shape[0]
    skip = None
    by_index = isinstance(write, list)
    for layer in range(len(w.dilations)):
        if by_index:  # views of the rows, then a copy of h into its row
            stacked = torch.cat([*(history[:, row] for row in read[layer]), h], dim=1)
            history[:, write[layer]] = h
        else:
            taps = history.index_select(1, read[layer]).reshape(batch, -1)
            stacked = torch.cat([taps, h], dim=1)
            history.index_copy_(1, write[layer], h.unsqueeze(1))
        a = torch.addmm(bias[:, layer * gate : (layer + 1) * gate], stacked, w.conv[layer])
        z = torch.tanh(a[:, :half]) * torch.sigmoid(a[:, half:])
        o = torch.addmm(w.out_b[layer], z, w.out_w[layer])
        h = (h + o[:, :residual]) * HALF_SQRT
        skip = o[:, residual:] if skip is None else skip + o[:, residual:]
    assert skip is not None
    return torch.addmm(w.head_b2, torch.relu(torch.addmm(w.head_b1, torch.relu(skip), w.head_w1)), w.head_w2)


class Stepper:
    """A WaveNet evaluated one position at a time with PyTorch: `logits = stepper(inputs, bias)`."""

    def __init__(self, net: WaveNet, batch: int) -> None:
        self.weights = StepWeights.from_wavenet(net)
        self.slots = RingSlots(self.weights)
        self.history = self.weights.empty_history(batch)
        self.position = 0

    def __call__(self, inputs: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        logits = step(self.weights, self.slots, self.history, self.position, inputs, bias)
        self.position += 1
        return logits


def choose(net: WaveNet, logits: torch.Tensor, noise: torch.Tensor | None, inv_temperature: float | torch.Tensor) -> torch.Tensor:
    """Each row's next class from its logits [B, out_channels] and Gumbel noise [B, noise_width]
    (None: greedy): Gumbel-max over categories, or a draw from the mixture of logistics."""
    if net.mixtures:
        return mixture.sample(logits, noise if noise is not None else logits.new_zeros(()), inv_temperature, greedy=noise is None)
    if noise is None:
        return logits.argmax(-1)
    return (logits * inv_temperature + noise).argmax(-1)
