"""Decoding codes with the audio VQ-VAE: its WaveNet sampled through the generation engine."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch

from vqaudio.audio.mulaw import mulaw_decode
from vqaudio.generation.engine import Backend, iter_generate
from vqaudio.models.audio_vqvae import AudioVQVAE


def iter_decode(
    model: AudioVQVAE,
    codes: torch.Tensor,
    speaker: torch.Tensor,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
    backend: Backend = "auto",
    top: torch.Tensor | None = None,
) -> Iterator[torch.Tensor]:
    """Codes [B, n, frames] (the first n codebooks; a two-level model also takes its `top`
    codes [B, 1, frames / ratio]) -> successive blocks of audio [B, samples] (float in [-1, 1],
    on the CPU).

    Memory stays bounded whatever the length: conditioning is computed per block."""
    model.check_top(top, codes.shape[-1])
    with torch.no_grad():
        speaker_vector = model.speaker_vector(speaker)
    blocks = iter_generate(
        model.decoder,
        codes.shape[-1] * model.hop,
        batch=codes.shape[0],
        cond=lambda first, last: model.latent_conditioning(codes, first, last, top),
        global_cond=speaker_vector,
        first_input=model.silence,
        temperature=temperature,
        generator=generator,
        backend=backend,
    )
    for block in blocks:
        yield mulaw_decode(block.classes, model.mu_channels)


@torch.inference_mode()
def decode(
    model: AudioVQVAE,
    codes: torch.Tensor,
    speaker: torch.Tensor,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
    on_progress: Callable[[int], None] | None = None,
    backend: Backend = "auto",
    top: torch.Tensor | None = None,
) -> torch.Tensor:
    """Codes [B, n, frames] (and `top` codes of a two-level model) -> audio [B, frames * hop]
    by sampling the WaveNet one sample at a time."""
    pieces = []
    done = 0
    for audio in iter_decode(model, codes, speaker, temperature, generator, backend, top):
        pieces.append(audio)
        done += audio.shape[1]
        if on_progress is not None:
            on_progress(done)
    return torch.cat(pieces, dim=1)
