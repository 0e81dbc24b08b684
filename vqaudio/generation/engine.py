"""The incremental generation engine shared by every WaveNet (the VQ-VAE decoder, the code prior).

It generates a batch of sequences at once (different conditioning, speakers and lengths), one
block of positions at a time, so callers can stream the output and memory stays bounded: the
conditioning for a block is asked for only when the block starts. Sampling uses the Gumbel-max
trick with noise drawn in blocks from one torch.Generator, so every back end draws exactly the
same noise and, given equal logits, the same samples.

Back ends: `plain` (PyTorch ops, one call per layer per step; any device), `fast` (the fused numba
kernel of `fast_cpu`, CPU only), `cuda-graph` (the per-step computation captured once as a CUDA
graph and replayed). `auto` picks cuda-graph on CUDA, fast on the CPU, and falls back to plain
with a warning when the chosen one cannot run.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from vqaudio.generation import fast_cpu, packed
from vqaudio.generation.packed import Precision
from vqaudio.generation.wavenet_step import Stepper, StepWeights, choose
from vqaudio.models.pruning import zero_block_fraction
from vqaudio.models.wavenet import WaveNet

Backend = Literal["auto", "plain", "fast", "cuda-graph"]
CondFn = Callable[[int, int], torch.Tensor]  # frames [f0, f1) -> local conditioning [B, C, f1 - f0]
_NO_HOP = 1 << 62  # without local conditioning every position reads frame 0


@dataclass
class GeneratedBlock:
    start: int  # first position of the block
    classes: torch.Tensor  # [B, n] int64 on the CPU
    logits: torch.Tensor | None  # [B, n, classes] when recorded
    backend: str  # which back end produced it


class _PlainBackend:
    """The cached PyTorch step (`wavenet_step.step`), looped in Python."""

    name = "plain"

    def __init__(self, net: WaveNet, batch: int) -> None:
        self.net = net
        self.stepper = Stepper(net, batch)

    def run(self, t0, n, prev, bias, frame0, hop, noise, inv_temperature, greedy, record):
        classes = torch.empty(prev.shape[0], n, dtype=torch.long, device=prev.device)
        logits_out = torch.empty(prev.shape[0], n, self.net.out_channels, device=prev.device) if record else None
        for s in range(n):
            t = t0 + s
            logits = self.stepper(prev, bias[:, t // hop - frame0])
            prev = choose(self.net, logits, None if greedy else noise[s], inv_temperature)
            classes[:, s] = prev
            if record:
                logits_out[:, s] = logits
        return classes, logits_out, prev


class _FastCpuBackend:
    """The fused numba kernel, reading the step's weights laid out once (`StepWeights.numpy`),
    its layers' matrices dense or in block rows (`packed`): block rows for int8 weights, and for
    float32 ones when at least `SPARSE_FROM` of their blocks are zero (a pruned decoder)."""

    name = "fast"
    SPARSE_FROM = 0.25

    def __init__(self, net: WaveNet, batch: int, precision: Precision = "fp32") -> None:
        weights = StepWeights.from_wavenet(net)
        self.kernel_size = weights.kernel_size
        self.arrays = weights.numpy()
        preferred = net.pruning.block[1] if net.pruning is not None else None
        width = packed.block_width(weights.gate, weights.out_w.shape[2], preferred=preferred)
        zeros = min(zero_block_fraction(m.reshape(-1, m.shape[-1]), (1, width)) for m in (weights.conv, weights.out_w))
        self.blocks = precision == "int8" or zeros >= self.SPARSE_FROM
        self.density = 1.0
        if self.blocks:
            conv, out = packed.pack(weights.conv, width, precision), packed.pack(weights.out_w, width, precision)
            self.density = (conv.vals.size + out.vals.size) / (weights.conv.numel() + weights.out_w.numel())
            self.arrays.update(conv_w=np.zeros((1, 1, 1), np.float32), out_w=np.zeros((1, 1, 1), np.float32))
            self.packed = (
                conv.start, conv.rows, conv.cols, conv.vals, conv.scale, out.start, out.rows, out.cols, out.vals, out.scale
            )  # fmt: skip
        else:
            start, index = np.zeros(len(weights.dilations) + 1, np.int64), np.zeros(1, np.uint32)
            vals, scale = np.zeros((1, 1), np.float32), np.zeros((len(weights.dilations), 1), np.float32)
            self.packed = (start, index, index, vals, scale, start, index, index, vals, scale)
        self.history = np.zeros((batch, sum(weights.spans), weights.residual), dtype=np.float32)
        self.classes = weights.classes
        self.mixtures = net.mixtures
        self.threads = max(1, min(batch, torch.get_num_threads(), fast_cpu.numba.config.NUMBA_NUM_THREADS))

    def run(self, t0, n, prev, bias, frame0, hop, noise, inv_temperature, greedy, record):
        batch = prev.shape[0]
        w = self.arrays
        prev_np = prev.numpy().astype(np.int64).copy()
        out = np.empty((batch, n), dtype=np.int64)
        logits = np.empty((batch, n, self.classes) if record else (0, 0, 0), dtype=np.float32)
        noise_np = noise.numpy() if noise is not None else np.zeros((0, 0, 0), dtype=np.float32)
        fast_cpu.numba.set_num_threads(self.threads)
        fast_cpu.generate_block(
            t0, n, prev_np,
            w["embed"], w["conv_w"], w["out_w"], w["out_b"], w["head_w1"], w["head_b1"], w["head_w2"], w["head_b2"],
            bias.numpy(), frame0, hop, w["dilations"], w["offsets"], w["spans"], self.kernel_size, self.history,
            noise_np, np.float32(inv_temperature), greedy, out, logits, record, self.threads, self.mixtures,
            self.blocks, *self.packed,
        )  # fmt: skip
        return torch.from_numpy(out), (torch.from_numpy(logits) if record else None), torch.from_numpy(prev_np)


def _choose_backend(net: WaveNet, batch: int, backend: Backend, precision: Precision = "fp32"):
    if precision not in packed.PRECISIONS:
        raise ValueError(f"precision {precision!r}: choose one of {', '.join(packed.PRECISIONS)}")
    device = net.device
    wanted = backend
    if backend == "auto":
        wanted = "cuda-graph" if device.type == "cuda" else "fast"
    if wanted == "fast":
        problem = fast_cpu.available() or (None if device.type == "cpu" else f"the model is on {device}, not the CPU")
        if problem is None:
            try:
                return _FastCpuBackend(net, batch, precision)
            except Exception as exc:  # noqa: BLE001 - any failure here means: use the plain path
                problem = f"{type(exc).__name__}: {exc}"
        warnings.warn(f"fast CPU generation unavailable ({problem}); using the plain PyTorch path", stacklevel=3)
    if precision == "int8":  # the other back ends compute with the rounded weights `fast` stores as int8
        net = packed.int8_copy(net)
    if wanted == "fast":
        return _PlainBackend(net, batch)
    if wanted == "cuda-graph":
        from vqaudio.generation.cuda_graph import CudaGraphBackend, cuda_graph_problem

        problem = cuda_graph_problem(net)
        if problem is None:
            return CudaGraphBackend(net, batch)
        warnings.warn(f"CUDA graph generation unavailable ({problem}); using the plain PyTorch path", stacklevel=3)
    return _PlainBackend(net, batch)


@torch.inference_mode()
def iter_generate(
    net: WaveNet,
    length: int,
    batch: int = 1,
    cond: torch.Tensor | CondFn | None = None,
    global_cond: torch.Tensor | None = None,
    first_input: int = 0,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
    backend: Backend = "auto",
    block: int = 512,
    record_logits: bool = False,
    precision: Precision | None = None,
) -> Iterator[GeneratedBlock]:
    """Yield blocks of generated classes until `length` positions exist for every sequence.

    `cond` is local conditioning [B, C, frames] or a function giving frames [f0, f1) on demand
    (bounded memory for long outputs). Temperature 0 picks the most likely class at every step.
    `precision` "int8": the layers' weights rounded to int8 per output channel (`packed`); None:
    the net's `generation_precision`.
    """
    device = net.device
    runner = _choose_backend(net, batch, backend, precision or net.generation_precision)  # type: ignore[arg-type]
    hop = net.hop if cond is not None else _NO_HOP
    cond_fn = (lambda f0, f1: cond[:, :, f0:f1]) if isinstance(cond, torch.Tensor) else cond
    greedy = temperature <= 0
    inv_temperature = 0.0 if greedy else 1.0 / temperature
    prev = torch.full((batch,), first_input, dtype=torch.long, device=device)
    if runner.name == "fast":
        prev = prev.cpu()
    for t0 in range(0, length, block):
        n = min(block, length - t0)
        if cond_fn is not None:
            f0, f1 = t0 // hop, (t0 + n - 1) // hop + 1
            bias = net.frame_bias(cond_fn(f0, f1), global_cond, batch)
        else:
            f0 = 0
            bias = net.frame_bias(None, global_cond, batch)
        noise = None
        if not greedy:
            uniform = torch.rand(n, batch, net.noise_width, generator=generator, device=device)
            noise = -torch.log(-torch.log(uniform.clamp_(1e-12, 1.0 - 1e-7)))
        if runner.name == "fast":
            bias, noise = bias.float().cpu(), (noise.float().cpu() if noise is not None else None)
        classes, logits, prev = runner.run(t0, n, prev, bias, f0, hop, noise, inv_temperature, greedy, record_logits)
        yield GeneratedBlock(t0, classes.cpu(), logits.cpu() if logits is not None else None, runner.name)


@dataclass
class Generated:
    classes: torch.Tensor  # [B, length]
    logits: torch.Tensor | None  # [B, length, classes] when recorded
    backend: str


def generate(
    net: WaveNet,
    length: int,
    batch: int = 1,
    cond: torch.Tensor | CondFn | None = None,
    global_cond: torch.Tensor | None = None,
    first_input: int = 0,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
    backend: Backend = "auto",
    record_logits: bool = False,
    on_progress: Callable[[int], None] | None = None,
    precision: Precision | None = None,
) -> Generated:
    """Generate `length` positions for each of `batch` sequences and return them all at once."""
    blocks = []
    iterator = iter_generate(
        net, length, batch, cond, global_cond, first_input, temperature, generator, backend,
        record_logits=record_logits, precision=precision,
    )  # fmt: skip
    for block in iterator:
        blocks.append(block)
        if on_progress is not None:
            on_progress(block.start + block.classes.shape[1])
    classes = torch.cat([b.classes for b in blocks], dim=1)
    logits = torch.cat([b.logits for b in blocks], dim=1) if record_logits else None
    return Generated(classes, logits, blocks[0].backend if blocks else backend)


def generate_batch(
    net: WaveNet,
    lengths: Sequence[int],
    cond: Sequence[torch.Tensor] | None = None,
    global_cond: torch.Tensor | None = None,
    **kwargs,
) -> list[torch.Tensor]:
    """Sequences of different lengths (and conditioning) in one batch: conditioning is zero-padded
    to the longest, all are generated together and each is cut to its own length."""
    longest = max(lengths)
    padded = None
    if cond is not None:
        frames = max(c.shape[-1] for c in cond)
        padded = torch.zeros(len(cond), cond[0].shape[0], frames, device=cond[0].device, dtype=cond[0].dtype)
        for i, c in enumerate(cond):
            padded[i, :, : c.shape[-1]] = c
    result = generate(net, longest, len(lengths), padded, global_cond, **kwargs)
    return [result.classes[i, :n] for i, n in enumerate(lengths)]
