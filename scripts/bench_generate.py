#!/usr/bin/env python
"""Benchmark WaveNet generation: the plain cached PyTorch loop against the fused fast path.

Reference decoder (random weights): 20 layers (dilations 1..512 twice), kernel 2, 64 residual,
128 gate, 128 skip channels, 256-way output, 64-channel local conditioning at hop 64, a 16-d
speaker embedding. Prints samples/s at batch 1 on one thread and aggregate samples/s at batch 16
on two threads for each path, the real-time factor at 16 kHz, and, as its last line, one JSON
object: {"plain_b1", "fast_b1", "plain_b16", "fast_b16", "exact"}.

    .venv/bin/python scripts/bench_generate.py [--samples 4000]
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from vqaudio.generation.engine import generate
from vqaudio.models.wavenet import WaveNet

RATE = 16000


def reference_decoder() -> WaveNet:
    torch.manual_seed(0)
    return WaveNet(
        num_classes=256, residual_channels=64, gate_channels=128, skip_channels=128,
        layers=20, stacks=2, kernel_size=2, cond_channels=64, global_channels=16, hop=64,
    ).eval()  # fmt: skip


def conditioning(batch: int, samples: int):
    frames = -(-samples // 64)
    gen = torch.Generator().manual_seed(1)
    return torch.randn(batch, 64, frames, generator=gen), torch.randn(batch, 16, generator=gen)


def time_generation(net: WaveNet, backend: str, batch: int, threads: int, samples: int) -> float:
    torch.set_num_threads(threads)
    cond, speaker = conditioning(batch, samples)
    generate(net, 64 * 4, batch, cond, speaker, backend=backend)  # warm-up (and numba compilation)
    start = time.perf_counter()
    result = generate(net, samples, batch, cond, speaker, generator=torch.Generator().manual_seed(0), backend=backend)
    elapsed = time.perf_counter() - start
    assert result.backend == backend, f"asked for {backend}, ran {result.backend}"
    return batch * samples / elapsed


def exactness(net: WaveNet, samples: int = 1024, batch: int = 4) -> tuple[bool, float, bool]:
    cond, speaker = conditioning(batch, samples)
    runs = {
        b: generate(net, samples, batch, cond, speaker, generator=torch.Generator().manual_seed(3), backend=b, record_logits=True)
        for b in ("plain", "fast")
    }
    diff = (runs["plain"].logits - runs["fast"].logits).abs().max().item()
    same_samples = torch.equal(runs["plain"].classes, runs["fast"].classes)
    return diff <= 1e-4, diff, same_samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=4000, help="samples generated per sequence (at least 4000)")
    args = parser.parse_args()
    net = reference_decoder()
    macs = sum(c.weight.numel() + o.weight.numel() for c, o in zip(net.convs, net.outs))
    macs += net.head[1].weight.numel() + net.head[3].weight.numel()
    print(f"reference decoder: receptive field {net.receptive_field}, {macs / 1e6:.2f} M multiply-adds per sample")
    figures = {}
    for backend in ("plain", "fast"):
        for batch, threads in ((1, 1), (16, 2)):
            rate = time_generation(net, backend, batch, threads, args.samples)
            figures[f"{backend}_b{batch}"] = round(rate, 1)
            print(
                f"{backend:5s} batch {batch:2d} on {threads} thread(s): {rate:10,.0f} samples/s  "
                f"({rate / RATE:.3f}x real time at 16 kHz, {rate * macs / 1e9:.2f} GMAC/s)"
            )
    torch.set_num_threads(2)
    exact, diff, same = exactness(net)
    print(f"fast vs plain: max |logit difference| {diff:.2e} over 1024 steps x 4 sequences; same samples: {same}")
    keys = ("plain_b1", "fast_b1", "plain_b16", "fast_b16")
    print(json.dumps({**{k: figures[k] for k in keys}, "exact": exact}))


if __name__ == "__main__":
    main()
