"""A trained code prior with its VQ-VAE: sampling new speech and scoring codes in bits.

`vqaudio sample` and `vqaudio encode --entropy` call these; so can a notebook. A two-level VQ-VAE
has two priors: the top one over the top codes and the bottom one conditioned on them; sampling
draws the top codes, then the bottom codes given the top, then decodes both.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
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
    metadata: dict[str, Any] = field(default_factory=dict)  # the checkpoint's: level, ratio, ...

    @property
    def level(self) -> str | None:
        """None over a one-level VQ-VAE; "top" or "bottom" over a two-level one."""
        return self.metadata.get("level")

    @property
    def code_rate(self) -> float:
        """Code frames per second (of the prior's own level)."""
        return self.codec.sample_rate / (self.codec.block if self.level == "top" else self.codec.hop)


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
    condition = int(meta.get("condition_codes") or 0)  # a bottom prior: top codes, one per `ratio` frames
    ratio = int(meta.get("ratio", 1)) if condition else 1
    model = build_prior_model(recipe.prior, int(meta["codebook_size"]), int(meta["n_q"]), len(meta["speakers"]), condition, ratio)
    try:
        model.load_state_dict(payload["model"])
    except RuntimeError as exc:
        raise VQAudioError(f"{checkpoint}: weights do not fit the recipe stored with them ({str(exc).splitlines()[0]})") from None
    model.mask_start_logit()  # priors trained before the mask existed: changes no probability
    model.to(device).eval()
    return Prior(
        model, codec, Path(checkpoint), payload["fingerprint"], int(payload["step"]), dict(payload.get("valid") or {}), meta
    )


def load_prior_pair(
    checkpoint: str | Path,
    device: torch.device,
    bottom: str | Path | None = None,
    vqvae: str | Path | None = None,
    chosen: bool = False,
) -> tuple[Prior, Prior | None]:
    """A code prior, and for a two-level VQ-VAE's top prior its bottom partner (given, or the newest
    one over the same VQ-VAE in the top prior's runs folder). `chosen`: the checkpoint was picked
    as the newest prior, so a bottom prior stands for its pair (the newest top prior beside it)."""
    from vqaudio.train.run_dir import needs_bottom_prior, newest_prior_at_level, runs_dir_of

    first = load_prior(checkpoint, device, vqvae)
    if first.level == "bottom" and chosen and bottom is None:
        top = newest_prior_at_level(runs_dir_of(Path(checkpoint)), "code_prior", "top", first.codec.fingerprint)
        if top is not None:
            bottom, checkpoint, first = checkpoint, top, load_prior(top, device, vqvae)
    if not needs_bottom_prior(checkpoint, first.level, bottom):
        return first, None
    if bottom is None:
        runs = runs_dir_of(Path(checkpoint))
        bottom = newest_prior_at_level(runs, "code_prior", "bottom", first.codec.fingerprint)
        if bottom is None:
            raise VQAudioError(
                f"{checkpoint} is a top prior: no bottom prior over its VQ-VAE under {runs}/; "
                "train one (recipes/demo_vqvae2_bottom_prior.yaml) or pass --bottom"
            )
    second = load_prior(bottom, device, vqvae)
    if second.level != "bottom" or second.codec.fingerprint != first.codec.fingerprint:
        raise VQAudioError(f"{bottom}: not a bottom prior over {first.codec.checkpoint}")
    return first, second


def sample_lengths(prior: Prior, seconds: float) -> tuple[int, int]:
    """(samples, code frames) of a sample lasting `seconds`: the frames cover the samples exactly
    as `vqaudio encode` would (so that the written codes and sidecar agree)."""
    num_samples = max(1, round(seconds * prior.codec.sample_rate))
    return num_samples, prior.codec.frames_for(num_samples)


def sample_prior_codes(
    prior: Prior,
    speaker: str | int | None,
    seconds: float = 4.0,
    count: int = 1,
    temperature: float = 1.0,
    seed: int = 0,
    on_progress: Callable[[int], None] | None = None,
    backend: str = "auto",
    bottom: Prior | None = None,
) -> tuple[np.ndarray, int, np.ndarray | None]:
    """Draw `count` code sequences [count, n_q, frames] of `seconds` for one speaker; returns (codes,
    speaker index, top codes [count, 1, frames / ratio] or None).

    For a two-level VQ-VAE `prior` is the top prior and `bottom` the bottom one: the top codes are
    drawn first, then the bottom codes given them. `on_progress` counts up to `frames` once over
    both levels: the top codes fill the first half, the bottom codes the second."""
    if seconds <= 0:
        raise VQAudioError(f"--seconds {seconds}: must be positive")
    if count < 1:
        raise VQAudioError(f"-n {count}: must be at least 1")
    if (prior.level == "top") != (bottom is not None):
        raise VQAudioError("a two-level VQ-VAE is sampled with its top prior and its bottom prior together")
    index = prior.codec.speaker_index(speaker)
    _, frames = sample_lengths(prior, seconds)
    speakers = torch.full((count,), index, dtype=torch.long, device=prior.codec.device)
    if bottom is None:
        codes = _draw(prior, frames, speakers, temperature, seed, on_progress, backend)
        return codes.cpu().numpy(), index, None
    ratio = prior.codec.ratio
    half = (lambda done: on_progress(done * ratio // 2)) if on_progress else None
    top = _draw(prior, frames // ratio, speakers, temperature, seed, half, backend)
    rest = (lambda done: on_progress(frames // 2 + done // 2)) if on_progress else None
    codes = _draw(bottom, frames, speakers, temperature, seed + 1, rest, backend, top)
    return codes.cpu().numpy(), index, top.cpu().numpy()


def _draw(
    prior: Prior, frames: int, speakers: torch.Tensor, temperature: float, seed: int,
    on_progress: Callable[[int], None] | None, backend: str, top: torch.Tensor | None = None,
) -> torch.Tensor:  # fmt: skip
    # One codebook samples through the generation engine on the model's device; several, on the CPU.
    generator = torch.Generator(device=prior.codec.device if prior.model.n_q == 1 else "cpu").manual_seed(seed)
    return sample_codes(prior.model, frames, speakers, temperature, generator, on_progress, backend, top)  # type: ignore[arg-type]


def decode_samples(
    prior: Prior,
    codes: np.ndarray,
    speaker_index: int,
    temperature: float = 1.0,
    seed: int = 0,
    backend: str = "auto",
    on_progress: Callable[[int], None] | None = None,
    top: np.ndarray | None = None,
) -> np.ndarray:
    """Decode a batch of codes [n, n_q, frames] (and a two-level model's `top` codes
    [n, 1, frames / ratio]) as one speaker with the VQ-VAE: audio [n, frames * hop]."""
    codec = prior.codec
    speakers = torch.full((codes.shape[0],), speaker_index, dtype=torch.long, device=codec.device)
    generator = torch.Generator(device=codec.device).manual_seed(seed)
    tensor = torch.as_tensor(codes, dtype=torch.long).to(codec.device)
    top_tensor = None if top is None else torch.as_tensor(top, dtype=torch.long).to(codec.device)
    audio = codec.model.decode(tensor, speakers, temperature, generator, on_progress, backend, top_tensor)  # type: ignore[arg-type]
    return audio.float().cpu().numpy()


@dataclass
class Samples:
    codes: np.ndarray  # [n, n_q, frames]
    audio: np.ndarray  # [n, frames * hop], float32
    speaker_index: int
    top: np.ndarray | None = None  # two-level models: [n, 1, frames / ratio]


def sample_speech(
    prior: Prior,
    speaker: str | int | None,
    seconds: float = 4.0,
    count: int = 1,
    temperature: float = 1.0,
    decoder_temperature: float = 1.0,
    seed: int = 0,
    backend: str = "auto",
    bottom: Prior | None = None,
) -> Samples:
    """New speech in one call: codes from the prior (top then bottom for a two-level model, with
    `bottom` its bottom prior), then audio from the VQ-VAE's decoder."""
    codes, index, top = sample_prior_codes(prior, speaker, seconds, count, temperature, seed, backend=backend, bottom=bottom)
    audio = decode_samples(prior, codes, index, decoder_temperature, seed, backend, top=top)
    return Samples(codes, audio, index, top)


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
