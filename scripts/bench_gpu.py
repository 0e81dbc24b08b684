#!/usr/bin/env python
"""Benchmark a CUDA GPU: CUDA-graph against plain generation, and training in fp32, bf16 and bf16 + compile.

Generation (random weights): the reference decoder of scripts/bench_generate.py (20 layers,
64/128/128 channels, 64-channel conditioning at hop 64, a 16-d speaker) and the paper-size decoder
of recipes/vctk.yaml (30 layers, 128/256/128, 128-channel conditioning at hop 64, a 64-d speaker,
256 classes), each with `backend="plain"` and `backend="cuda-graph"` of
`vqaudio.generation.engine.generate` at batch 1 and 16 (aggregate samples/s; a CUDA graph is
captured inside every `generate` call, so its capture is part of the time). Exactness: both back
ends over 1024 steps x 4 sequences, greedy and sampled under one seed, for both decoders.

Training: real optimiser steps of recipes/vctk.yaml (its model, 16 x 16384-sample batches) through
the training loop (`vqaudio.train.loop.Trainer`) on synthetic data (random audio, random speakers),
so no VCTK copy is needed: `train.precision=fp32`, `=bf16` and `=bf16` with `train.compile=true`.
A configuration that fails (out of memory on a small GPU, no Triton for torch.compile) gets null
and its error under "errors"; the others still run.

Prints human-readable lines and, as its last line, one JSON object (keys in `KEYS`; docs/gpu.md).

    .venv/bin/python scripts/bench_gpu.py [--samples 4000] [--steps 20] [--warmup 5] [--device cuda:0]

Exit codes: 0 measured (the JSON line printed; read "errors" and "graph_exact"); 2 nothing
measured: no CUDA GPU (one line on stderr, nothing on stdout) or bad arguments.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_generate import reference_decoder  # noqa: E402 - the one definition of the reference decoder

from vqaudio.formats.metadata import AudioVQVAEMetadata
from vqaudio.generation.engine import generate
from vqaudio.models.build import build_audio_vqvae
from vqaudio.models.wavenet import WaveNet
from vqaudio.recipe import Recipe, load_recipe
from vqaudio.train.loop import Trainer
from vqaudio.train.setup import Shard, TrainSetup

RATE = 16000
RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "vctk.yaml"
SPEAKERS = 109  # VCTK's speakers (109 or 110 by release): only the size of the speaker table
EXIT_NO_GPU = 2
NO_GPU_MESSAGE = "bench_gpu: no CUDA GPU here (torch.cuda.is_available() is False); nothing measured"
TOLERANCE = 1e-4  # largest |logit difference| allowed between the back ends

DECODERS = ("ref", "paper")
GENERATION_KEYS = tuple(f"{d}_{b}_b{n}" for d in DECODERS for n in (1, 16) for b in ("plain", "graph"))
GENERATION_PEAK_KEYS = tuple(f"{d}_{b}_b16_peak_mb" for d in DECODERS for b in ("plain", "graph"))
TRAIN_CONFIGS: dict[str, list[str]] = {
    "fp32": ["train.precision=fp32"],
    "bf16": ["train.precision=bf16"],
    "bf16_compile": ["train.precision=bf16", "train.compile=true"],
}
TRAIN_KEYS = tuple(f"train_{c}_steps_s" for c in TRAIN_CONFIGS)
TRAIN_PEAK_KEYS = tuple(f"train_{c}_peak_mb" for c in TRAIN_CONFIGS)
KEYS = (
    *GENERATION_KEYS, "graph_exact", "graph_max_logit_diff", "graph_same_samples",
    *TRAIN_KEYS, *TRAIN_PEAK_KEYS, *GENERATION_PEAK_KEYS,
    "device", "capability", "bf16_native", "torch", "samples", "train_steps", "warmup_steps", "errors",
)  # fmt: skip


# ----- devices -----


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def peak_mb(device: torch.device) -> float | None:
    """Peak memory allocated by tensors since `reset_peak` (None off CUDA)."""
    if device.type != "cuda":
        return None
    return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)


def release(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


# ----- generation -----


def paper_decoder(recipe: Recipe) -> WaveNet:
    """The WaveNet decoder of `recipe` (recipes/vctk.yaml), built as training builds it (seed 0)."""
    torch.manual_seed(recipe.seed)
    decoder = build_audio_vqvae(recipe.model, num_speakers=SPEAKERS).decoder
    assert isinstance(decoder, WaveNet), "the recipe's decoder is not a WaveNet"
    return decoder.eval()


def conditioning(net: WaveNet, batch: int, samples: int, device: torch.device) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Random local conditioning [B, cond, frames] and speaker vectors [B, speaker] on `device`
    (drawn on the CPU, so every device gets the same values)."""
    gen = torch.Generator().manual_seed(1)
    frames = -(-samples // net.hop)
    cond = torch.randn(batch, net.cond_channels, frames, generator=gen).to(device) if net.cond_channels else None
    speaker = torch.randn(batch, net.global_channels, generator=gen).to(device) if net.global_channels else None
    return cond, speaker


def time_generation(net: WaveNet, backend: str, batch: int, samples: int, device: torch.device) -> tuple[float, float | None]:
    """Aggregate samples/s of `generate` (after a short warm-up call) and its peak memory in MB."""
    cond, speaker = conditioning(net, batch, samples, device)
    warm = generate(net, 4 * net.hop, batch, cond, speaker, generator=torch.Generator(device=device).manual_seed(0), backend=backend)
    if warm.backend != backend:
        raise RuntimeError(f"asked for the {backend} back end, ran {warm.backend}")
    release(device)
    reset_peak(device)
    start = time.perf_counter()
    result = generate(net, samples, batch, cond, speaker, generator=torch.Generator(device=device).manual_seed(0), backend=backend)
    sync(device)
    elapsed = time.perf_counter() - start
    if result.backend != backend:
        raise RuntimeError(f"asked for the {backend} back end, ran {result.backend}")
    return batch * samples / elapsed, peak_mb(device)


def compare_backends(
    net: WaveNet, device: torch.device, backends: Sequence[str] = ("plain", "cuda-graph"), samples: int = 1024, batch: int = 4
) -> dict[str, Any]:
    """Both back ends, greedy and sampled (one seed): the largest |logit difference| over every
    step, whether the classes are equal, and `exact` (both: within TOLERANCE and equal)."""
    cond, speaker = conditioning(net, batch, samples, device)
    diff, same = 0.0, True
    for temperature in (0.0, 1.0):
        runs = []
        for backend in backends:
            gen = torch.Generator(device=device).manual_seed(3)
            run = generate(net, samples, batch, cond, speaker, temperature=temperature, generator=gen, backend=backend, record_logits=True)
            if run.backend != backend:
                raise RuntimeError(f"asked for the {backend} back end, ran {run.backend}")
            runs.append(run)
        diff = max(diff, (runs[0].logits - runs[1].logits).abs().max().item())
        same = same and torch.equal(runs[0].classes, runs[1].classes)
    return {"max_logit_diff": diff, "same_samples": same, "exact": diff <= TOLERANCE and same}


# ----- training -----


def synthetic_setup(recipe: Recipe, speakers: int = SPEAKERS) -> TrainSetup:
    """`recipe`'s audio VQ-VAE with batches of random audio and random speakers in place of the
    corpus (a pure function of the step, as the real task's batches are)."""
    torch.manual_seed(recipe.seed)
    model = build_audio_vqvae(recipe.model, num_speakers=speakers)
    crop = recipe.data.crop_samples

    def train_batch(step: int, shard: Shard) -> dict[str, torch.Tensor]:
        gen = torch.Generator().manual_seed(recipe.seed * 1_000_003 + step)
        audio = (0.3 * torch.randn(shard.total, crop, generator=gen)).clamp_(-1.0, 1.0)
        speaker = torch.randint(0, speakers, (shard.total,), generator=gen)
        return {"audio": shard.take(audio).contiguous(), "speaker": shard.take(speaker).contiguous()}

    metadata = AudioVQVAEMetadata(
        speakers=[f"s{i:03d}" for i in range(speakers)], sample_rate=recipe.data.sample_rate, hop=model.hop,
        codebook_size=model.codebook_size, n_q=model.n_q, ratio=model.ratio, top_codebook_size=model.top_codebook_size,
    )  # fmt: skip
    return TrainSetup("audio_vqvae", model, train_batch, lambda: iter(()), metadata)


def time_training(recipe: Recipe, device: torch.device, steps: int, warmup: int) -> tuple[float, float | None]:
    """Optimiser steps/s of `recipe` through the training loop (its precision, compile and batch)
    after `warmup` untimed steps (k-means initialisation and compilation happen there), and the
    peak memory in MB of the whole run (model, optimiser state, warm-up and timed steps)."""
    release(device)
    reset_peak(device)
    setup = synthetic_setup(recipe)
    with tempfile.TemporaryDirectory(prefix="bench_gpu_") as folder:
        trainer = Trainer(setup, recipe, Path(folder), device, Console(stderr=True), show_progress=False)
        for _ in range(warmup):
            trainer._train_step()  # the loop's own step: batches to the device, autocast, compile, Adam
        sync(device)
        start = time.perf_counter()
        for _ in range(steps):
            trainer._train_step()
        sync(device)
        elapsed = time.perf_counter() - start
    return steps / elapsed, peak_mb(device)


# ----- the run -----


def measure(label: str, errors: dict[str, str], device: torch.device, work: Callable[[], Any]) -> Any:
    """`work()`, or None with its error recorded under `label` (the benchmark goes on)."""
    try:
        return work()
    except Exception as exc:  # noqa: BLE001 - out of memory, no Triton, a failed capture: report and go on
        lines = str(exc).strip().splitlines()
        errors[label] = f"{type(exc).__name__}: {lines[0] if lines else ''}"
        print(f"{label}: failed ({errors[label]})", flush=True)
        return None
    finally:
        release(device)


def bench_decoder(
    name: str, net: WaveNet, samples: int, device: torch.device, result: dict[str, Any], errors: dict[str, str]
) -> dict[str, Any] | None:
    """Time both back ends at batch 1 and 16 into `result` (`{name}_{plain|graph}_b{1|16}`, and
    peak memory at batch 16), then compare them; returns the comparison (None if it failed)."""
    print(f"{name} decoder: {len(net.convs)} layers, residual {net.residual_channels}, gate {net.gate_channels}, "
          f"skip {net.skip_channels}, cond {net.cond_channels}, speaker {net.global_channels}, hop {net.hop}")  # fmt: skip
    for batch in (1, 16):
        for backend, short in (("plain", "plain"), ("cuda-graph", "graph")):
            key = f"{name}_{short}_b{batch}"
            timed = measure(key, errors, device, lambda: time_generation(net, backend, batch, samples, device))
            rate, peak = timed if timed is not None else (None, None)
            result[key] = round(rate, 1) if rate is not None else None
            if batch == 16:
                result[f"{key}_peak_mb"] = peak
            if rate is not None:
                print(f"  {backend:10s} batch {batch:2d}: {rate:10,.0f} samples/s ({rate / RATE:.3f}x real time at 16 kHz)"
                      + (f", peak {peak:,.0f} MB" if batch == 16 else ""), flush=True)  # fmt: skip
    compared = measure(f"{name}_exactness", errors, device, lambda: compare_backends(net, device))
    if compared is not None:
        print(f"  cuda-graph vs plain: max |logit difference| {compared['max_logit_diff']:.2e} over 1024 steps x 4 "
              f"sequences, greedy and sampled; same samples: {compared['same_samples']}", flush=True)  # fmt: skip
    return compared


def parse_args(argv: Sequence[str] | None) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=4000, help="samples generated per sequence in each timing (default 4000)")
    parser.add_argument("--steps", type=int, default=20, help="timed training steps per configuration (default 20)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed training steps first (default 5: covers the k-means init)")
    parser.add_argument("--device", default="cuda", help="the CUDA device: cuda or cuda:N (default cuda)")
    args = parser.parse_args(argv)
    if args.samples < 64 or args.steps < 1 or args.warmup < 0:
        parser.error("--samples must be at least 64, --steps at least 1 and --warmup at least 0")
    try:
        device = torch.device(args.device)
    except RuntimeError:
        parser.error(f"--device {args.device!r} is not a device name; use cuda or cuda:N")
    if device.type != "cuda":
        parser.error(f"--device {args.device}: this benchmark measures a CUDA device (cuda or cuda:N)")
    return parser, args


def main(argv: Sequence[str] | None = None) -> int:
    parser, args = parse_args(argv)
    if not torch.cuda.is_available():
        print(NO_GPU_MESSAGE, file=sys.stderr)
        return EXIT_NO_GPU
    device = torch.device(args.device)
    if device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    if device.index >= torch.cuda.device_count():
        parser.error(f"--device {args.device}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    # CUDA-graph capture runs on a stream of the *current* device (see docs/gpu.md): make it ours.
    torch.cuda.set_device(device)
    props = torch.cuda.get_device_properties(device)
    errors: dict[str, str] = {}
    result: dict[str, Any] = {
        "device": props.name,
        "capability": f"{props.major}.{props.minor}",
        "bf16_native": torch.cuda.is_bf16_supported(including_emulation=False),
        "torch": torch.__version__,
        "samples": args.samples,
        "train_steps": args.steps,
        "warmup_steps": args.warmup,
    }
    print(f"device {device}: {props.name} (compute capability {result['capability']}, {props.total_memory / 2**30:.1f} GiB), torch {torch.__version__}")

    recipe = load_recipe(RECIPE)
    compared = [
        bench_decoder("ref", reference_decoder().to(device), args.samples, device, result, errors),
        bench_decoder("paper", paper_decoder(recipe).to(device), args.samples, device, result, errors),
    ]
    exact = all(c is not None and c["exact"] for c in compared)
    same = all(c is not None and c["same_samples"] for c in compared)
    max_diff = max((c["max_logit_diff"] for c in compared if c is not None), default=0.0)
    result.update(graph_exact=exact, graph_max_logit_diff=float(f"{max_diff:.3g}"), graph_same_samples=same)

    print(f"training {RECIPE.name}: batch {recipe.train.batch_size} x {recipe.data.crop_samples} samples, synthetic data, "
          f"{args.warmup} warm-up + {args.steps} timed steps")  # fmt: skip
    for config, overrides in TRAIN_CONFIGS.items():
        configured = load_recipe(RECIPE, overrides)
        timed = measure(f"train_{config}", errors, device, lambda: time_training(configured, device, args.steps, args.warmup))
        if config.endswith("compile"):
            torch._dynamo.reset()  # drop the compiled graphs before the next configuration
        rate, peak = timed if timed is not None else (None, None)
        result[f"train_{config}_steps_s"] = round(rate, 3) if rate is not None else None
        result[f"train_{config}_peak_mb"] = peak
        if rate is not None:
            print(f"  {config:12s}: {rate:.3f} steps/s, peak {peak:,.0f} MB", flush=True)
    result["errors"] = errors
    print(json.dumps({key: result.get(key) for key in KEYS}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
