#!/usr/bin/env python
"""Benchmark one training forward + backward of the vector quantiser against
vector-quantize-pytorch's VectorQuantize with matching options (EMA codebook, decay 0.99,
commitment 0.25, no k-means), on B=16 x 4,000 latents of D=64 with K=512 and K=4096.
Ours runs with its usage statistics on (histogram, moving-average usage, perplexity).

The comparison library is an optional benchmark extra, not a dependency:
    .venv/bin/pip install -e '.[bench]'
    .venv/bin/python scripts/bench_quantizer.py

Last line: {"ratio_k512": ..., "ratio_k4096": ...} (our time / theirs; null without the extra).
"""

from __future__ import annotations

import json
import time

import torch

from vqaudio.models.quantizer import VectorQuantizer

B, T, D = 16, 4000, 64


def timed(step, reps: int = 3) -> float:
    step()  # warm-up
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        step()
        best = min(best, time.perf_counter() - start)
    return best


def ours(k: int) -> float:
    vq = VectorQuantizer(k, D, beta=0.25, update="ema", decay=0.99, init="random").train()
    z = torch.randn(B, D, T, requires_grad=True)

    def step() -> None:
        out = vq(z)
        (out.quantized.square().mean() + out.loss).backward()
        out.perplexity.item()

    return timed(step)


def theirs(k: int) -> float | None:
    try:
        from vector_quantize_pytorch import VectorQuantize
    except ImportError:
        return None
    vq = VectorQuantize(dim=D, codebook_size=k, decay=0.99, commitment_weight=0.25, kmeans_init=False).train()
    z = torch.randn(B, T, D, requires_grad=True)

    def step() -> None:
        quantized, _, loss = vq(z)
        (quantized.square().mean() + loss.sum()).backward()

    return timed(step)


def main() -> None:
    torch.set_num_threads(2)
    result = {}
    for k in (512, 4096):
        mine, other = ours(k), theirs(k)
        gflop = 2 * B * T * D * k / 1e9
        line = f"K={k:5d}: ours {mine:.3f} s"
        if other is None:
            line += "  (vector-quantize-pytorch not installed: pip install -e '.[bench]')"
            result[f"ratio_k{k}"] = None
        else:
            line += f", vector-quantize-pytorch {other:.3f} s, ratio {mine / other:.3f}"
            result[f"ratio_k{k}"] = round(mine / other, 4)
        print(line + f"  (distance product {gflop:.1f} GFLOP; ours at {gflop / mine:.1f} GFLOP/s)")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
