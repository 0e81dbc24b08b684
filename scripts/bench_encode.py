#!/usr/bin/env python
"""Benchmark encoding speed and the memory of streaming encode/decode.

1. Encoding speed of the paper's encoder (six stride-2 window-4 convolutions, as in
   recipes/vctk.yaml, random weights) on 60 s of audio, in times real time at 16 kHz, for
   several encoder widths, with the arithmetic per audio second.
2. Peak memory (max RSS) of `vqaudio encode` on a 10-minute wav against a 1-minute wav.
3. Peak memory of `vqaudio decode` (demo-size decoder) on 30 s against 120 s of codes.
4. The conv decoder of recipes/demo_conv.yaml (random weights): decoding speed on 60 s of codes
   in times real time on 2 threads, block by block as `vqaudio decode` runs it, and the peak
   memory of `vqaudio decode` on 1 minute against 1 hour of codes.
Equal peaks mean memory does not grow with the recording's length.

Last line: {"encode_x_realtime": ..., "encode_peak_mb_1min": ..., "encode_peak_mb_10min": ...,
"decode_peak_mb_30s": ..., "decode_peak_mb_120s": ..., "conv_decode_x_realtime": ...,
"conv_decode_peak_mb_1min": ..., "conv_decode_peak_mb_60min": ...}

    .venv/bin/python scripts/bench_encode.py
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from vqaudio.formats.checkpoint import model_fingerprint, save_checkpoint
from vqaudio.models.build import build_audio_vqvae
from vqaudio.recipe import load_recipe

ROOT = Path(__file__).resolve().parents[1]
RATE = 16000


def encoder_speed(channels: int, seconds: int = 60) -> tuple[float, float]:
    from vqaudio.models.encoder import AudioEncoder

    torch.set_num_threads(2)
    encoder = AudioEncoder(channels, 64, downsample_layers=6, kernel_size=4, residual_layers=2).eval()
    audio = torch.randn(1, 1, RATE * seconds)
    convs = [m for m in encoder.net if isinstance(m, torch.nn.Conv1d)]
    macs = sum(c.weight.numel() * RATE // 2 ** (i + 1) for i, c in enumerate(convs[:6]))
    with torch.inference_mode():
        encoder(audio[:, :, : RATE * 4])
        start = time.perf_counter()
        encoder(audio)
        elapsed = time.perf_counter() - start
    return seconds / elapsed, macs / 1e6


def conv_decoder_speed(recipe_path: Path, seconds: int = 60) -> float:
    """Times real time of the conv decoder over `seconds` of codes, block by block, 2 threads."""
    from vqaudio.generation.decode import iter_conv_decode

    torch.set_num_threads(2)
    torch.manual_seed(0)
    model = build_audio_vqvae(load_recipe(recipe_path).model, 4).eval()
    codes = torch.randint(0, model.codebook_size, (1, 1, RATE * seconds // model.hop))
    speaker = model.speaker_vector(torch.tensor([0]))
    for _ in iter_conv_decode(model, codes[..., :256], speaker):  # warm up
        pass
    start = time.perf_counter()
    samples = sum(block.shape[1] for block in iter_conv_decode(model, codes, speaker))
    return samples / RATE / (time.perf_counter() - start)


def write_checkpoint(recipe_path: Path, folder: Path, overrides: list[str]) -> Path:
    recipe = load_recipe(recipe_path, overrides)
    torch.manual_seed(0)
    model = build_audio_vqvae(recipe.model, 4)
    state = {k: v for k, v in model.state_dict().items()}
    path = folder / f"{recipe.name}.pt"
    save_checkpoint(path, {
        "kind": "audio_vqvae", "recipe": recipe.to_dict(), "step": 0, "model": state,
        "fingerprint": model_fingerprint(state),
        "metadata": {"speakers": [f"s{i}" for i in range(4)], "sample_rate": RATE, "hop": model.hop,
                     "codebook_size": model.codebook_size},
    })  # fmt: skip
    return path


def peak_mb(args: list[str]) -> tuple[float, float]:
    """Run a vqaudio command in a fresh process; return (its max RSS in MB, seconds)."""
    code = (
        "import resource, subprocess, sys, time; t = time.perf_counter(); "
        "subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, time.perf_counter() - t)"
    )
    out = subprocess.run([sys.executable, "-c", code, sys.executable, "-m", "vqaudio", *args], capture_output=True, text=True, check=True)
    mb, seconds = out.stdout.split()
    return float(mb), float(seconds)


def main() -> None:
    figures: dict[str, float] = {}
    for channels in (256, 128, 64, 32):
        speed, mmac = encoder_speed(channels)
        print(f"encoder, {channels:3d} channels: {speed:6.0f}x real time ({mmac:,.0f} M multiply-adds per audio second)")
        if channels == 128:
            figures["encode_x_realtime"] = round(speed, 1)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        vctk = write_checkpoint(ROOT / "recipes" / "vctk.yaml", folder, [])
        demo = write_checkpoint(ROOT / "recipes" / "demo.yaml", folder, [])
        rng = np.random.default_rng(0)
        for minutes in (1, 10):
            wav = folder / f"{minutes}min.wav"
            with sf.SoundFile(wav, "w", RATE, 1, "PCM_16") as handle:
                for _ in range(minutes * 6):
                    handle.write(0.1 * rng.standard_normal(RATE * 10))
            mb, seconds = peak_mb(["encode", str(wav), str(folder / f"{minutes}.npy"), "-c", str(vctk), "--force"])
            figures[f"encode_peak_mb_{minutes}min"] = round(mb, 1)
            print(f"vqaudio encode, {minutes:2d}-minute wav (vctk.yaml encoder): peak {mb:,.0f} MB, {seconds:.1f} s")
        for seconds_of_audio in (30, 120):
            wav = folder / f"{seconds_of_audio}s.wav"
            sf.write(wav, 0.1 * rng.standard_normal(RATE * seconds_of_audio), RATE)
            codes = folder / f"{seconds_of_audio}s.npy"
            subprocess.run([sys.executable, "-m", "vqaudio", "encode", str(wav), str(codes), "-c", str(demo)], check=True, capture_output=True)
            mb, seconds = peak_mb(["decode", str(codes), str(folder / "out.wav"), "-c", str(demo), "--force"])
            figures[f"decode_peak_mb_{seconds_of_audio}s"] = round(mb, 1)
            print(f"vqaudio decode, {seconds_of_audio:3d} s of codes (demo.yaml decoder): peak {mb:,.0f} MB, {seconds:.1f} s")
        speed = conv_decoder_speed(ROOT / "recipes" / "demo_conv.yaml")
        figures["conv_decode_x_realtime"] = round(speed, 1)
        print(f"conv decoder (demo_conv.yaml), 2 threads: {speed:.0f}x real time")
        conv = write_checkpoint(ROOT / "recipes" / "demo_conv.yaml", folder, [])
        for minutes in (1, 60):
            wav = folder / f"{minutes}min.wav"
            with sf.SoundFile(wav, "w", RATE, 1, "PCM_16") as handle:
                for _ in range(minutes * 6):
                    handle.write(0.1 * rng.standard_normal(RATE * 10))
            codes = folder / f"conv_{minutes}min.npy"
            subprocess.run([sys.executable, "-m", "vqaudio", "encode", str(wav), str(codes), "-c", str(conv)], check=True, capture_output=True)
            mb, seconds = peak_mb(["decode", str(codes), str(folder / "out.wav"), "-c", str(conv), "--force"])
            figures[f"conv_decode_peak_mb_{minutes}min"] = round(mb, 1)
            print(f"vqaudio decode, {minutes:2d} min of codes (demo_conv.yaml decoder): peak {mb:,.0f} MB, {seconds:.1f} s")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
