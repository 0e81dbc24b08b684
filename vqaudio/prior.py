"""A trained code prior with its VQ-VAE: sampling new speech and scoring codes in bits.

`vqaudio sample` and `vqaudio encode --entropy` call these; so can a notebook.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vqaudio.codec import Codec, load_codec
from vqaudio.errors import VQAudioError
from vqaudio.models.code_prior import CodePrior, sample_codes
from vqaudio.recipe import validate_recipe
from vqaudio.train.checkpoint import load_checkpoint


@dataclass
class Prior:
    """A code prior and the VQ-VAE whose codes it models."""

    model: CodePrior
    codec: Codec
    checkpoint: Path
    fingerprint: str
    step: int
    valid: dict[str, float]

    @property
    def code_rate(self) -> float:
        """Code frames per second."""
        return self.codec.sample_rate / self.codec.hop


def load_prior(checkpoint: str | Path, device: torch.device, vqvae: str | Path | None = None) -> Prior:
    """Rebuild the prior from its checkpoint, and load the VQ-VAE it names (or `vqvae`)."""
    from vqaudio.tasks.code_prior import build_prior_model

    payload = load_checkpoint(checkpoint)
    if payload.get("kind") != "code_prior":
        raise VQAudioError(f"{checkpoint}: holds a {payload.get('kind')} model, not a code prior (train recipes/demo_prior.yaml)")
    meta = payload.get("metadata") or {}
    missing = [k for k in ("vqvae_checkpoint", "vqvae_fingerprint", "speakers", "codebook_size", "n_q") if k not in meta]
    if missing:
        raise VQAudioError(f"{checkpoint}: incomplete prior checkpoint (no metadata.{', metadata.'.join(missing)})")
    recipe = validate_recipe(payload["recipe"], f"{checkpoint} (embedded recipe)")
    vq_path = Path(vqvae or meta["vqvae_checkpoint"])
    if not vq_path.exists():
        raise VQAudioError(f"{checkpoint}: its VQ-VAE {vq_path} is gone; pass --vqvae with that model's checkpoint")
    codec = load_codec(vq_path, device)
    if codec.fingerprint != meta["vqvae_fingerprint"]:
        raise VQAudioError(
            f"{vq_path} is model {codec.fingerprint}, but {checkpoint} was trained on the codes of model "
            f"{meta['vqvae_fingerprint']}; pass --vqvae with that model's checkpoint"
        )
    assert recipe.prior is not None
    model = build_prior_model(recipe.prior, int(meta["codebook_size"]), int(meta["n_q"]), len(meta["speakers"]))
    try:
        model.load_state_dict(payload["model"])
    except RuntimeError as exc:
        raise VQAudioError(f"{checkpoint}: weights do not fit the recipe stored with them ({str(exc).splitlines()[0]})") from None
    model.mask_start_logit()  # priors trained before the mask existed: changes no probability
    model.to(device).eval()
    return Prior(model, codec, Path(checkpoint), payload["fingerprint"], int(payload["step"]), dict(payload.get("valid") or {}))


def sample_lengths(prior: Prior, seconds: float) -> tuple[int, int]:
    """(samples, code frames) of a sample lasting `seconds`: the frames cover the samples exactly
    as `vqaudio encode` would (so that the written codes and sidecar agree)."""
    num_samples = max(1, round(seconds * prior.codec.sample_rate))
    return num_samples, -(-num_samples // prior.codec.hop)


def sample_prior_codes(
    prior: Prior,
    speaker: str | int | None,
    seconds: float = 4.0,
    count: int = 1,
    temperature: float = 1.0,
    seed: int = 0,
    on_progress: Callable[[int], None] | None = None,
    backend: str = "auto",
) -> tuple[np.ndarray, int]:
    """Draw `count` code sequences [count, n_q, frames] of `seconds` for one speaker; returns (codes, speaker index)."""
    if seconds <= 0:
        raise VQAudioError(f"--seconds {seconds}: must be positive")
    if count < 1:
        raise VQAudioError(f"-n {count}: must be at least 1")
    index = prior.codec.speaker_index(speaker)
    _, frames = sample_lengths(prior, seconds)
    speakers = torch.full((count,), index, dtype=torch.long, device=prior.codec.device)
    # One codebook samples through the generation engine on the model's device; several, on the CPU.
    generator = torch.Generator(device=prior.codec.device if prior.model.n_q == 1 else "cpu").manual_seed(seed)
    codes = sample_codes(prior.model, frames, speakers, temperature, generator, on_progress, backend)  # type: ignore[arg-type]
    return codes.cpu().numpy(), index


def decode_samples(
    prior: Prior,
    codes: np.ndarray,
    speaker_index: int,
    temperature: float = 1.0,
    seed: int = 0,
    backend: str = "auto",
    on_progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Decode a batch of codes [n, n_q, frames] as one speaker with the VQ-VAE: audio [n, frames * hop]."""
    codec = prior.codec
    speakers = torch.full((codes.shape[0],), speaker_index, dtype=torch.long, device=codec.device)
    generator = torch.Generator(device=codec.device).manual_seed(seed)
    tensor = torch.as_tensor(codes, dtype=torch.long).to(codec.device)
    audio = codec.model.decode(tensor, speakers, temperature, generator, on_progress, backend)  # type: ignore[arg-type]
    return audio.float().cpu().numpy()


@dataclass
class Samples:
    codes: np.ndarray  # [n, n_q, frames]
    audio: np.ndarray  # [n, frames * hop], float32
    speaker_index: int


def sample_speech(
    prior: Prior,
    speaker: str | int | None,
    seconds: float = 4.0,
    count: int = 1,
    temperature: float = 1.0,
    decoder_temperature: float = 1.0,
    seed: int = 0,
    backend: str = "auto",
) -> Samples:
    """New speech in one call: codes from the prior, then audio from the VQ-VAE's decoder."""
    codes, index = sample_prior_codes(prior, speaker, seconds, count, temperature, seed, backend=backend)
    return Samples(codes, decode_samples(prior, codes, index, decoder_temperature, seed, backend), index)


def bits_per_code(prior: Prior, codes: np.ndarray, speaker: int) -> float:
    """-log2 p(codes) / number of codes under the prior (teacher-forced), for codes [n_q, frames]."""
    tensor = torch.as_tensor(codes.astype(np.int64))[None].to(prior.codec.device)
    with torch.no_grad():
        nats, count = prior.model.nll_nats(tensor, torch.tensor([speaker], device=prior.codec.device))
    return float(nats) / float(count) / math.log(2)


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
