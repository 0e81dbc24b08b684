"""CUDA back end: the whole per-step computation captured once as a CUDA graph and replayed.

On a GPU the plain step is bound by kernel launches (about a dozen per layer per sample), not by
arithmetic. A graph replays all of them with one launch. Graphs need fixed addresses and fixed
control flow, so the shared step (`wavenet_step.step`) runs here with the position as a counter on
the device that the graph itself advances, instead of a Python integer: the ring-buffer rows are
then computed on the device too.
"""

from __future__ import annotations

import torch

from vqaudio.generation.wavenet_step import RingSlots, StepWeights, choose, step
from vqaudio.models.wavenet import WaveNet


def cuda_graph_problem(net: WaveNet) -> str | None:
    """None when the CUDA graph path can run for `net`, else why not."""
    if not torch.cuda.is_available():
        return "CUDA is not available"
    if net.device.type != "cuda":
        return f"the model is on {net.device}, not a CUDA device"
    dtype = net.head[1].weight.dtype
    if dtype != torch.float32:
        return f"the model's weights are {dtype}; the captured step runs float32 models"
    return None


class CudaGraphBackend:
    """Replays a captured step; `use_graph=False` runs the same device-indexed step eagerly (tests)."""

    name = "cuda-graph"

    def __init__(self, net: WaveNet, batch: int, use_graph: bool = True) -> None:
        self.net = net
        device = net.device
        self.weights = StepWeights.from_wavenet(net)
        self.slots = RingSlots(self.weights)
        self.history = self.weights.empty_history(batch)
        self.position = torch.zeros((), dtype=torch.long, device=device)
        self.prev = torch.zeros(batch, dtype=torch.long, device=device)
        self.bias = torch.zeros(batch, len(net.convs) * net.gate_channels, device=device)
        self.noise = torch.zeros(batch, net.noise_width, device=device)
        self.inv_temperature = torch.ones((), device=device)
        self.greedy = torch.zeros((), dtype=torch.bool, device=device)
        self.graph = None
        self.started = False
        if use_graph:
            # Everything on the model's GPU, which need not be the current one: the side stream
            # for warm-up and the capture stream (torch.cuda.graph's default is made on the current GPU).
            with torch.cuda.device(device):
                stream = torch.cuda.Stream(device=device)
                stream.wait_stream(torch.cuda.current_stream(device))
                with torch.cuda.stream(stream):
                    for _ in range(3):  # warm up kernels and allocator outside the capture
                        self._step()
                torch.cuda.current_stream(device).wait_stream(stream)
                self._reset()
                self.graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(self.graph, stream=torch.cuda.Stream(device=device)):
                    self.logits, self.next = self._step()
                self._reset()

    def _reset(self) -> None:
        self.history.zero_()
        self.position.zero_()

    def _step(self) -> tuple[torch.Tensor, torch.Tensor]:
        logits = step(self.weights, self.slots, self.history, self.position, self.prev, self.bias)
        chosen = choose(self.net, logits, self.noise, self.inv_temperature)
        if self.net.mixtures:  # a graph has one control flow: compute the greedy choice too and select
            chosen = torch.where(self.greedy, choose(self.net, logits, None, self.inv_temperature), chosen)
        self.prev.copy_(chosen)
        self.position.add_(1)
        return logits, chosen

    def run(self, t0, n, prev, bias, frame0, hop, noise, inv_temperature, greedy, record):
        if not self.started:
            self.prev.copy_(prev)
            self.started = True
        self.inv_temperature.fill_(1.0 if greedy else inv_temperature)
        self.greedy.fill_(greedy)
        if greedy:  # categorical: no Gumbel noise is the argmax (mixtures select their greedy choice)
            self.noise.zero_()
        classes = torch.empty(prev.shape[0], n, dtype=torch.long, device=prev.device)
        logits_out = torch.empty(prev.shape[0], n, self.net.out_channels, device=prev.device) if record else None
        for s in range(n):
            t = t0 + s
            self.bias.copy_(bias[:, t // hop - frame0])
            if not greedy:
                self.noise.copy_(noise[s])
            if self.graph is not None:
                self.graph.replay()
                logits, chosen = self.logits, self.next
            else:
                logits, chosen = self._step()
            classes[:, s] = chosen
            if record:
                logits_out[:, s] = logits
        return classes, logits_out, self.prev.clone()
