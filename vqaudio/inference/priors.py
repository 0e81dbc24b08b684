"""Priors in pairs and priors as scores.

A two-level VQ-VAE (audio or images) has two priors: the top one over the top codes and the
bottom one conditioned on them. Wherever a top prior is given, its bottom partner is the one
given with `--bottom`, or else the newest bottom prior over the same VQ-VAE in the runs folder
the top prior's run sits in (found by reading checkpoints' metadata only, never their weights).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vqaudio.errors import VQAudioError
from vqaudio.formats.checkpoint import list_checkpoints, read_header
from vqaudio.inference.load import (
    AUDIO_PRIOR,
    IMAGE_PRIOR,
    ImagePrior,
    Prior,
    load,
    resolve_checkpoint,
)
from vqaudio.train.run_dir import run_folders, runs_dir_of


def find_partner(runs_dir: Path, kind: str, level: str, vqvae_fingerprint: str) -> Path | None:
    """The newest last checkpoint of a `kind` prior at `level` over the VQ-VAE with
    `vqvae_fingerprint` under `runs_dir`; None when there is none."""
    found = []
    for run in run_folders(runs_dir, kind):
        checkpoints = list_checkpoints(run)
        header = read_header(checkpoints[-1]) if checkpoints else None
        if header is not None and header.metadata.get("level") == level and header.metadata.get("vqvae_fingerprint") == vqvae_fingerprint:
            found.append(checkpoints[-1])
    return max(found, key=lambda p: p.stat().st_mtime_ns) if found else None


def _check_first(first: Prior | ImagePrior, bottom_given: bool, option: str) -> None:
    if first.level == "bottom":
        raise VQAudioError(f"{first.checkpoint}: a bottom prior; give the top prior (-c) and this one with {option}")
    if first.level is None and bottom_given:
        raise VQAudioError(f"{option}: {first.checkpoint} is a prior over one-level codes; there is no bottom level")


def check_pair(first: Prior | ImagePrior, bottom: Prior | ImagePrior | None, option: str = "--bottom") -> None:
    """A one-level model's codes go under one prior; a two-level model's under its top prior and
    its bottom prior (`bottom`), both over the same VQ-VAE."""
    _check_first(first, bottom is not None, option)
    if first.level == "top" and bottom is None:
        raise VQAudioError(f"{first.checkpoint}: a top prior; two-level codes are coded with its bottom prior too ({option})")
    if bottom is not None and (bottom.level != "bottom" or bottom.vqvae_fingerprint != first.vqvae_fingerprint):
        raise VQAudioError(f"{bottom.checkpoint}: not a bottom prior over the VQ-VAE of {first.checkpoint}")


def _kind(prior: Prior | ImagePrior) -> str:
    return AUDIO_PRIOR if isinstance(prior, Prior) else IMAGE_PRIOR


def with_partner(
    first: Prior | ImagePrior, device: torch.device, bottom: str | Path | None = None, vqvae: str | Path | None = None
) -> tuple[Any, Any]:
    """`first` and, when it is a two-level VQ-VAE's top prior, its bottom partner: `bottom` (a
    checkpoint or run folder), or the newest bottom prior over the same VQ-VAE beside it."""
    _check_first(first, bottom is not None, "--bottom")
    if first.level != "top":
        return first, None
    kind = _kind(first)
    if bottom is None:
        runs = runs_dir_of(first.checkpoint)
        bottom = find_partner(runs, kind, "bottom", first.vqvae_fingerprint)
        if bottom is None:
            example = "recipes/demo_vqvae2_bottom_prior.yaml" if kind == AUDIO_PRIOR else "prior.level=bottom"
            raise VQAudioError(
                f"{first.checkpoint} is a top prior: no bottom prior over its VQ-VAE under {runs}/; "
                f"train one ({example}) or pass --bottom"
            )
    second = load(resolve_checkpoint(bottom, "--bottom"), device, vqvae, kinds=(kind,))
    assert isinstance(second, (Prior, ImagePrior))
    check_pair(first, second)
    return first, second


def load_prior_pair(
    checkpoint: str | Path,
    device: torch.device,
    bottom: str | Path | None = None,
    vqvae: str | Path | None = None,
    chosen: bool = False,
    kinds: tuple[str, ...] = (AUDIO_PRIOR,),
) -> tuple[Any, Any]:
    """A prior (audio or image, as `kinds` allows) and, for a two-level VQ-VAE's top prior, its
    bottom partner (see `with_partner`). `chosen`: the checkpoint was picked as the newest prior,
    so a bottom prior stands for its pair (the newest top prior beside it)."""
    first = load(checkpoint, device, vqvae, kinds=kinds)
    if not isinstance(first, (Prior, ImagePrior)):
        raise VQAudioError(f"{checkpoint}: not a prior")
    if first.level == "bottom" and chosen and bottom is None:
        top = find_partner(runs_dir_of(first.checkpoint), _kind(first), "top", first.vqvae_fingerprint)
        if top is not None:
            bottom, first = first.checkpoint, load(top, device, vqvae, kinds=kinds)  # type: ignore[assignment]
    return with_partner(first, device, bottom, vqvae)  # type: ignore[arg-type]


def prior_bits(prior: Prior, codes: np.ndarray, speaker: int, top: np.ndarray | None = None) -> float:
    """-log2 p(codes [n_q, frames]) under the prior, teacher-forced (a bottom prior: given `top` [1, frames / ratio])."""
    device = prior.codec.device
    tensor = torch.as_tensor(codes.astype(np.int64))[None].to(device)
    top_tensor = None if top is None else torch.as_tensor(top.astype(np.int64))[None].to(device)
    with torch.no_grad():
        nats, _ = prior.model.nll_nats(tensor, torch.tensor([speaker], device=device), top_tensor)
    return float(nats) / math.log(2)


def bits_per_code(prior: Prior, codes: np.ndarray, speaker: int) -> float:
    """-log2 p(codes) / number of codes under the prior (teacher-forced), for codes [n_q, frames]."""
    return prior_bits(prior, codes, speaker) / codes.size


def describe(prior: Prior) -> dict[str, Any]:
    """The figures `vqaudio info` and `eval` show: bits per code, and the raw and prior bitrates."""
    bits = prior.valid.get("bits_per_code")
    raw_bits = math.log2(prior.codec.codebook_size)
    rate = prior.code_rate * prior.codec.n_q
    return {
        "bits_per_code": bits,
        "raw_bits_per_code": raw_bits,
        "raw_bitrate": rate * raw_bits,
        "prior_bitrate": rate * bits if bits is not None else None,
    }


