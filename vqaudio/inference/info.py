"""`vqaudio info`: what a checkpoint holds, in a form a person reads."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.table import Table

from vqaudio.bitrate import bitrate
from vqaudio.formats.checkpoint import read_checkpoint
from vqaudio.formats.metadata import (
    AudioVQVAEMetadata,
    CodePriorMetadata,
    ImageModelMetadata,
    ImagePriorMetadata,
)
from vqaudio.inference.load import resolve_checkpoint
from vqaudio.models.conv_decoder import default_strides
from vqaudio.recipe import AudioModelConfig, AudioRecipe


def checkpoint_summary(path: Path) -> dict[str, Any]:
    """The facts `vqaudio info` prints, as a plain dict (also handy in a notebook or as JSON)."""
    checkpoint = read_checkpoint(resolve_checkpoint(path))
    meta = checkpoint.metadata
    summary: dict[str, Any] = {
        "kind": checkpoint.kind,
        "step": checkpoint.step,
        "fingerprint": checkpoint.fingerprint,
        "recipe": checkpoint.payload.get("recipe"),
        "speakers": getattr(meta, "speakers", []),
        "speaker_info": getattr(meta, "speaker_info", {}),
        "valid": checkpoint.valid,
    }
    if isinstance(meta, (ImageModelMetadata, ImagePriorMetadata)):
        prior = isinstance(meta, ImagePriorMetadata)
        summary.update(classes=meta.class_names, image_shape=meta.image_shape, code_shape=meta.code_shape if prior else None,
                       level=meta.level if prior else None, vqvae_checkpoint=meta.vqvae_checkpoint if prior else None)  # fmt: skip
    if isinstance(meta, (AudioVQVAEMetadata, CodePriorMetadata)):
        summary.update(
            sample_rate=meta.sample_rate,
            hop=meta.hop,
            codebook_size=meta.codebook_size,
            n_q=meta.n_q,
            bitrate=bitrate(meta.sample_rate, meta.hop, meta.codebook_size, meta.n_q),
            bitrates=[bitrate(meta.sample_rate, meta.hop, meta.codebook_size, n) for n in range(1, meta.n_q + 1)],
            level=getattr(meta, "level", None),
        )
        if isinstance(checkpoint.recipe, AudioRecipe):
            summary.update(decoder=describe_decoder(checkpoint.recipe.model), quantizer=describe_quantizer(checkpoint.recipe.model))
        if isinstance(meta, AudioVQVAEMetadata) and meta.top_codebook_size:  # two levels: the top adds its own bits
            total = bitrate(meta.sample_rate, meta.hop, meta.codebook_size, meta.n_q, meta.ratio, meta.top_codebook_size)
            summary.update(ratio=meta.ratio, top_codebook_size=meta.top_codebook_size, top_bitrate=total - summary["bitrate"], bitrate=total)
        bits = summary["valid"].get("bits_per_code")
        if isinstance(meta, CodePriorMetadata) and bits is not None:
            codes_per_second = meta.n_q * meta.sample_rate / meta.hop
            summary.update(vqvae_checkpoint=meta.vqvae_checkpoint, bits_per_code=bits, prior_bitrate=codes_per_second * bits)
    return summary


def describe_decoder(model: AudioModelConfig) -> str:
    dec = model.decoder
    if dec.kind == "conv":
        strides = dec.strides or default_strides(model.hop)
        return f"conv, {dec.channels} channels, upsampling {' x '.join(map(str, strides))}, {dec.activation}"
    output = f"mixture of {dec.mixtures} logistics over 16-bit samples" if dec.output == "mol" else f"{dec.quantization_channels} μ-law classes"
    emphasis = f", pre-emphasis {dec.pre_emphasis}" if dec.pre_emphasis else ""
    sparse = ""
    if dec.sparsity:
        rows, cols = dec.sparsity_block
        sparse = f", {dec.sparsity:.0%} block-sparse ({rows} x {cols} blocks, pruned from step {dec.pruning_start} to {dec.pruning_end})"
    return f"WaveNet, {dec.layers} layers, {output}{emphasis}{sparse}"


def describe_quantizer(model: AudioModelConfig) -> str:
    q = model.quantizer
    if q.kind == "fsq":
        return f"finite scalar quantisation, levels {q.levels}"
    return f"codebook, factorised codes in {q.code_dim} dimensions" if q.code_dim else "codebook"


def describe_checkpoint(path: Path, console: Console) -> None:
    s = checkpoint_summary(path)
    console.print(f"[bold]{path}[/]  {s['kind']}, step {s['step']}, fingerprint {s['fingerprint']}")
    if "hop" in s:
        console.print(
            f"sample rate {s['sample_rate']} Hz, downsampling x{s['hop']} "
            f"({s['sample_rate'] / s['hop']:.1f} codes/s), K = {s['codebook_size']}, "
            f"bitrate {s['bitrate']:.0f} bit/s"
        )
        if "decoder" in s:
            console.print(f"decoder: {s['decoder']}; quantiser: {s['quantizer']}", soft_wrap=True)
        if "top_bitrate" in s:
            top_hop = s["hop"] * s["ratio"]
            console.print(
                f"two levels: those are the bottom codes; top codes at x{top_hop} ({s['sample_rate'] / top_hop:.1f} codes/s), "
                f"K = {s['top_codebook_size']}, {s['top_bitrate']:.0f} bit/s; the bitrate counts both",
                soft_wrap=True,
            )
        if s["level"]:
            given = ", given the top codes" if s["level"] == "bottom" else ""
            console.print(f"a prior over the {s['level']} codes of a two-level model{given}", soft_wrap=True)
        if s["n_q"] > 1:
            rates = ", ".join(f"{n}: {rate:.0f}" for n, rate in enumerate(s["bitrates"], start=1))
            console.print(f"residual VQ, {s['n_q']} codebooks; bit/s by codebooks kept (encode --n-q): {rates}")
        if "prior_bitrate" in s:
            console.print(
                f"prior over the codes of {s['vqvae_checkpoint']}: held-out {s['bits_per_code']:.3f} bits per code "
                f"(raw {math.log2(s['codebook_size']):.0f}); bitrate raw {s['bitrate']:.0f} bit/s, "
                f"under the prior {s['prior_bitrate']:.0f} bit/s (what encode --entropy approaches)"
            )
        valid = s["valid"]
        if "codes_used" in valid:
            console.print(
                f"codebook usage on the held-out set: {valid['codes_used']:.0f} of {s['codebook_size']} codes, "
                f"perplexity {valid['perplexity']:.1f}, entropy {valid['entropy']:.2f} bits"
            )
        if "top_codes_used" in valid:
            console.print(
                f"top codebook usage on the held-out set: {valid['top_codes_used']:.0f} of {s['top_codebook_size']} codes, "
                f"perplexity {valid['top_perplexity']:.1f}, entropy {valid['top_entropy']:.2f} bits"
            )
    if "classes" in s:
        shape = "x".join(map(str, s["image_shape"] or [])) or "?"
        console.print(f"images {shape}, {len(s['classes'])} classes: " + ", ".join(f"{i} {n}" for i, n in enumerate(s["classes"])))
        if s["code_shape"]:
            level = f"{s['level']} level " if s["level"] else ""
            console.print(f"prior over the {level}code maps ({'x'.join(map(str, s['code_shape']))}) of {s['vqvae_checkpoint']}")
    else:
        table = Table("index", "speaker", "details", title=f"{len(s['speakers'])} speakers")
        for i, name in enumerate(s["speakers"]):
            details = s["speaker_info"].get(name, {})
            table.add_row(str(i), name, " ".join(v for v in details.values() if v))
        console.print(table)
    if s["valid"]:
        console.print("last validation: " + "  ".join(f"{k} {v:.4g}" for k, v in s["valid"].items()))
    console.print("[bold]recipe[/]")
    console.print(yaml.safe_dump(s["recipe"], sort_keys=False), highlight=False)
