"""Decoding codes with the audio VQ-VAE: a WaveNet sampled through the generation engine, or a
conv decoder run over blocks of frames with enough context on each side that the blocks join
into exactly what one pass over the whole sequence gives."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch

from vqaudio.audio.emphasis import DeEmphasis
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

    Memory stays bounded whatever the length: conditioning is computed per block. A conv
    decoder is deterministic: `temperature`, `generator` and `backend` do not apply."""
    model.check_top(top, codes.shape[-1])
    with torch.no_grad():
        speaker_vector = model.speaker_vector(speaker)
    if model.waveform_decoder:
        yield from iter_conv_decode(model, codes, speaker_vector, top)
        return
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
    emphasis = DeEmphasis(model.pre_emphasis)  # the identity without pre-emphasis
    for block in blocks:
        yield emphasis(model.sample_values(block.classes)).clamp(-1, 1)


CONV_BLOCK_FRAMES = 1024  # frames per block of a conv decoder (~4 s at hop 64): memory stays flat, context costs ~4%


def iter_conv_decode(
    model: AudioVQVAE, codes: torch.Tensor, speaker_vector: torch.Tensor | None, top: torch.Tensor | None = None, block_frames: int = CONV_BLOCK_FRAMES
) -> Iterator[torch.Tensor]:
    """A conv decoder's audio [B, block_frames x hop] block by block, on the CPU."""
    frames = codes.shape[-1]
    with torch.inference_mode():
        for first in range(0, frames, block_frames):
            last = min(frames, first + block_frames)
            yield model.decode_frames(codes, first, last, speaker_vector, top).float().clamp(-1, 1).cpu()


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
