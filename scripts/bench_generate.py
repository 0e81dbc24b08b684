#!/usr/bin/env python
"""Benchmark WaveNet generation: the plain cached PyTorch loop against the fused fast path.

Reference decoder (random weights): 20 layers (dilations 1..512 twice), kernel 2, 64 residual,
128 gate, 128 skip channels, 256-way output, 64-channel local conditioning at hop 64, a 16-d
speaker embedding. Prints samples/s at batch 1 on one thread and aggregate samples/s at batch 16
on two threads for each path, and the real-time factor at 16 kHz.

Paper-size decoder: recipes/vctk.yaml's (30 layers, 128 residual, 256 gate, 128 skip, 128-channel
conditioning, a 64-d speaker), built as training builds it with random weights. When the recipe
prunes it (`model.decoder.sparsity`), its blocks are pruned by magnitude to the final sparsity,
the structure a trained decoder ends with. Each speed-up is measured on its own: dense float32,
dense int8, sparse float32, sparse int8 (`paper_<format>_b1` / `_b16`); `paper_b1` and `paper_b16`
are the recipe's decoder with `--precision` (the configuration the README reports). `paper_exact`:
the fast path's logits within 1e-4 of the teacher-forced pass of the network it computes, and the
same samples as the plain loop. `paper_int8_logit_error`: the largest |logit difference| int8
weights make against float32 ones, on the same inputs.

The last line is one JSON object: {"plain_b1", "fast_b1", "plain_b16", "fast_b16", "exact",
"paper_b1", "paper_b16", "paper_exact", ...}.

    .venv/bin/python scripts/bench_generate.py [--samples 4000] [--paper-samples 16000] [--precision fp32]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from vqaudio.generation import packed
from vqaudio.generation.engine import _choose_backend, generate
from vqaudio.models.build import build_audio_vqvae
from vqaudio.models.wavenet import WaveNet
from vqaudio.recipe import AudioRecipe, load_recipe

RATE = 16000
RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "vctk.yaml"
SPEAKERS = 109  # only the size of the speaker table


def reference_decoder() -> WaveNet:
    torch.manual_seed(0)
    return WaveNet(
        num_classes=256, residual_channels=64, gate_channels=128, skip_channels=128,
        layers=20, stacks=2, kernel_size=2, cond_channels=64, global_channels=16, hop=64,
    ).eval()  # fmt: skip


def paper_decoder(dense: bool = False) -> WaveNet:
    """recipes/vctk.yaml's decoder with random weights (seed 0), pruned to its final sparsity."""
    recipe = load_recipe(RECIPE)
    assert isinstance(recipe, AudioRecipe)
    if dense:
        recipe = recipe.model_copy(update={"model": recipe.model.model_copy(
            update={"decoder": recipe.model.decoder.model_copy(update={"sparsity": 0.0})})})  # fmt: skip
    torch.manual_seed(recipe.seed)
    net = build_audio_vqvae(recipe.model, num_speakers=SPEAKERS).decoder
    assert isinstance(net, WaveNet)
    if net.pruning is not None:
        net.after_optimizer_step(net.pruning.end)  # the mask update at the schedule's last step
    return net.eval()


def conditioning(batch: int, samples: int, net: WaveNet | None = None):
    frames = -(-samples // 64)
    cond_ch, spk = (net.cond_channels, net.global_channels) if net is not None else (64, 16)
    gen = torch.Generator().manual_seed(1)
    return torch.randn(batch, cond_ch, frames, generator=gen), torch.randn(batch, spk, generator=gen)


def time_generation(net: WaveNet, backend: str, batch: int, threads: int, samples: int, precision: str = "fp32") -> float:
    torch.set_num_threads(threads)
    cond, speaker = conditioning(batch, samples, net)
    generate(net, 64 * 4, batch, cond, speaker, backend=backend, precision=precision)  # warm-up (and numba compilation)
    start = time.perf_counter()
    result = generate(net, samples, batch, cond, speaker, generator=torch.Generator().manual_seed(0), backend=backend,
                      precision=precision)  # fmt: skip
    elapsed = time.perf_counter() - start
    assert result.backend == backend, f"asked for {backend}, ran {result.backend}"
    return batch * samples / elapsed


def teacher_forced(net: WaveNet, classes: torch.Tensor, cond: torch.Tensor, speaker: torch.Tensor) -> torch.Tensor:
    inputs = torch.cat([torch.zeros(classes.shape[0], 1, dtype=torch.long), classes[:, :-1]], dim=1)
    with torch.no_grad():
        return net(inputs, cond, speaker).transpose(1, 2)


def paper_exactness(net: WaveNet, precision: str, samples: int = 1024, batch: int = 2) -> tuple[bool, float, bool]:
    """Fast-path logits against the teacher-forced pass of the network they compute, and its
    samples against the plain loop's under one seed."""
    cond, speaker = conditioning(batch, samples, net)
    runs = {
        b: generate(net, samples, batch, cond, speaker, generator=torch.Generator().manual_seed(3), backend=b,
                    record_logits=True, precision=precision)  # fmt: skip
        for b in ("plain", "fast")
    }
    computed = packed.int8_copy(net) if precision == "int8" else net
    diff = (runs["fast"].logits - teacher_forced(computed, runs["fast"].classes, cond, speaker)).abs().max().item()
    return diff <= 1e-4, diff, torch.equal(runs["plain"].classes, runs["fast"].classes)


def int8_logit_error(net: WaveNet, samples: int = 1024, batch: int = 2) -> float:
    """The largest |logit difference| between int8 and float32 weights on the same (sampled) inputs."""
    cond, speaker = conditioning(batch, samples, net)
    classes = generate(net, samples, batch, cond, speaker, generator=torch.Generator().manual_seed(4), backend="fast").classes
    return (teacher_forced(packed.int8_copy(net), classes, cond, speaker) - teacher_forced(net, classes, cond, speaker)).abs().max().item()


def multiply_adds(net: WaveNet) -> int:
    macs = sum(c.weight.numel() + o.weight.numel() for c, o in zip(net.convs, net.outs))
    return macs + net.head[1].weight.numel() + net.head[3].weight.numel()


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
    parser.add_argument("--samples", type=int, default=4000, help="samples generated per sequence, reference decoder (at least 4000)")
    parser.add_argument("--paper-samples", type=int, default=16000, help="samples per sequence, paper-size decoder")
    parser.add_argument("--precision", choices=packed.PRECISIONS, default="fp32", help="weights of paper_b1 / paper_b16")
    parser.add_argument("--skip-reference", action="store_true", help="measure only the paper-size decoder")
    args = parser.parse_args()
    figures: dict[str, float | bool] = {}
    if not args.skip_reference:
        net = reference_decoder()
        macs = multiply_adds(net)
        print(f"reference decoder: receptive field {net.receptive_field}, {macs / 1e6:.2f} M multiply-adds per sample")
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
        figures["exact"] = exact

    sparse, dense = paper_decoder(), paper_decoder(dense=True)
    macs = multiply_adds(dense)
    schedule = sparse.pruning
    print(
        f"\npaper-size decoder (recipes/vctk.yaml): {macs / 1e6:.2f} M multiply-adds per sample dense; "
        + (f"recipe sparsity {schedule.sparsity:.0%} in {schedule.block[0]} x {schedule.block[1]} blocks" if schedule else "dense recipe")
    )
    variants = {"dense": (dense, "fp32"), "dense_int8": (dense, "int8")}
    if schedule is not None:
        variants.update(sparse=(sparse, "fp32"), sparse_int8=(sparse, "int8"))
    for name, (net, precision) in variants.items():
        density = _choose_backend(net, 1, "fast", precision).density  # type: ignore[union-attr]
        for batch, threads in ((1, 1), (16, 2)):
            rate = time_generation(net, "fast", batch, threads, args.paper_samples, precision)
            figures[f"paper_{name}_b{batch}"] = round(rate, 1)
            print(
                f"fast {name:11s} batch {batch:2d} on {threads} thread(s): {rate:10,.0f} samples/s  "
                f"({rate / RATE:.3f}x real time; {density:.1%} of the weights stored)"
            )
    chosen = ("sparse" if schedule is not None else "dense") + ("_int8" if args.precision == "int8" else "")
    figures["paper_b1"], figures["paper_b16"] = figures[f"paper_{chosen}_b1"], figures[f"paper_{chosen}_b16"]
    torch.set_num_threads(2)
    paper_exact, diff, same = paper_exactness(sparse, args.precision)
    error = int8_logit_error(sparse)
    print(
        f"paper_b1 / paper_b16 are '{chosen}'. Its fast path against the teacher-forced pass: max |logit difference| "
        f"{diff:.2e} over 1024 steps x 2 sequences; same samples as the plain loop: {same}\n"
        f"int8 against float32 weights (teacher-forced, same inputs): max |logit difference| {error:.3f}"
    )
    figures["paper_exact"] = paper_exact and same
    figures["paper_int8_logit_error"] = round(error, 4)
    keys = ("plain_b1", "fast_b1", "plain_b16", "fast_b16", "exact", "paper_b1", "paper_b16", "paper_exact")
    print(json.dumps({**{k: figures[k] for k in keys if k in figures}, **{k: v for k, v in figures.items() if k not in keys}}))


if __name__ == "__main__":
    main()
