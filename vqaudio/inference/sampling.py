"""Generating new data from learned priors: speech (codes from the prior, audio from the VQ-VAE's
decoder) and images (code maps from the PixelCNN, pixels from the VQ-VAE's decoder).

A two-level VQ-VAE is sampled top codes first, then bottom codes given the top, then decoded.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vqaudio.audio.io import write_wav
from vqaudio.errors import VQAudioError
from vqaudio.fileio import check_writable
from vqaudio.formats.images import grid, save_png
from vqaudio.generation.code_prior import sample_codes
from vqaudio.generation.decode import decode
from vqaudio.generation.pixelcnn import sample_pixelcnn
from vqaudio.inference.codec import write_codes
from vqaudio.inference.load import ImagePrior, Prior

ProgressFactory = Callable[[str, int, str], contextlib.AbstractContextManager]


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
    audio = decode(codec.model, tensor, speakers, temperature, generator, on_progress, backend, top_tensor)  # type: ignore[arg-type]
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


@dataclass
class SpeechFiles:
    """What `sample_speech_files` wrote: one wav and one codes file per sample."""

    wavs: list[Path]
    speaker: str


def sample_speech_files(
    prior: Prior,
    bottom: Prior | None,
    out_dir: Path,
    speaker: str | int | None = None,
    seconds: float = 4.0,
    count: int = 1,
    temperature: float = 1.0,
    decoder_temperature: float = 1.0,
    seed: int = 0,
    backend: str = "auto",
    force: bool = False,
    progress: ProgressFactory | None = None,
) -> SpeechFiles:
    """Sample `count` utterances and write `<speaker>_seed<seed>_<i>.wav` with its codes file
    (.npy, or .npz for two levels) and sidecar into `out_dir`. Every output is checked writable
    before any work starts. `progress(description, total, unit)` gives a progress callback."""
    codec = prior.codec
    name = codec.speakers[codec.speaker_index(speaker)]
    stems = [f"{name}_seed{seed}_{i}" for i in range(count)]
    codes_suffix = ".npz" if codec.two_level else ".npy"
    for stem in stems:
        for suffix in (".wav", codes_suffix, f"{codes_suffix}.json"):
            check_writable(out_dir / f"{stem}{suffix}", force)
    num_samples, frames = sample_lengths(prior, seconds)
    bar = progress or (lambda *_: contextlib.nullcontext(None))
    with bar("sample codes", frames, "frames") as update:
        codes, index, top = sample_prior_codes(prior, speaker, seconds, count, temperature, seed, update, backend, bottom)
    with bar("decode", frames * codec.hop, "samples") as update:
        audio = decode_samples(prior, codes, index, decoder_temperature, seed, backend, update, top)
    source = f"sampled from {prior.checkpoint.resolve()}" + (f" and {bottom.checkpoint.resolve()}" if bottom else "")
    wavs = []
    for i, stem in enumerate(stems):
        write_wav(out_dir / f"{stem}.wav", audio[i, :num_samples], codec.sample_rate, force=True)
        one_top = top[i] if top is not None else None
        write_codes(codec, codes[i], out_dir / f"{stem}{codes_suffix}", index, num_samples, source, True, one_top)
        wavs.append(out_dir / f"{stem}.wav")
    return SpeechFiles(wavs, name)


def sample_rows(first: ImagePrior, second: ImagePrior | None) -> int:
    """Rows `sample_images` draws (for a progress bar)."""
    return first.code_shape[0] + (second.code_shape[0] if second else 0)


@torch.no_grad()
def sample_images(
    first: ImagePrior, second: ImagePrior | None, labels: torch.Tensor, temperature: float = 1.0,
    generator: torch.Generator | None = None, on_row: Callable[[int], None] | None = None,
) -> np.ndarray:  # fmt: skip
    """Images uint8 [B, H, W, 3]: codes drawn from the prior (top, then bottom given the top, for a
    VQ-VAE-2) and decoded. `on_row` counts rows drawn over both levels."""
    height, width = first.code_shape
    codes, _ = sample_pixelcnn(first.model, labels, height, width, None, temperature, generator, on_row)
    if second is None:
        return first.vqvae.model.decode(codes).cpu().numpy()
    bottom_h, bottom_w = second.code_shape
    on_bottom_row = (lambda row: on_row(height + row)) if on_row else None
    bottom, _ = sample_pixelcnn(second.model, labels, bottom_h, bottom_w, codes, temperature, generator, on_bottom_row)
    return first.vqvae.model.decode(codes, bottom).cpu().numpy()


@dataclass
class ImageGrid:
    path: Path
    label: int
    name: str


def sample_image_grid(
    first: ImagePrior,
    second: ImagePrior | None,
    out_path: Path,
    label: str | int | None = None,
    count: int = 1,
    temperature: float = 1.0,
    seed: int = 0,
    force: bool = False,
    progress: ProgressFactory | None = None,
) -> ImageGrid:
    """Sample `count` images of one class into a PNG grid (`out_path`, or
    `out_path/<class>_seed<seed>.png` when it is a folder)."""
    index = first.vqvae.label_index(label)
    name = first.vqvae.class_names[index]
    target = out_path if out_path.suffix.lower() == ".png" else out_path / f"{name}_seed{seed}.png"
    check_writable(target, force)
    if count < 1:
        raise VQAudioError(f"-n {count}: must be at least 1")
    device = next(first.model.parameters()).device
    labels = torch.full((count,), index, dtype=torch.long, device=device)
    bar = progress or (lambda *_: contextlib.nullcontext(None))
    with bar("sample code rows", sample_rows(first, second), "rows") as update:
        images = sample_images(first, second, labels, temperature, torch.Generator().manual_seed(seed), update)
    save_png(grid(images), target, force)
    return ImageGrid(target, index, name)
