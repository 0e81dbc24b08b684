"""Audio to codes in bounded memory: the encoder run on chunks, giving exactly the whole-signal codes."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import torch

from vqaudio.errors import VQAudioError
from vqaudio.formats.codes import codes_dtype
from vqaudio.models.audio_vqvae import AudioVQVAE


@dataclass
class EncodedAudio:
    """The codes of one recording: bottom [n_q, frames] and, for a two-level model, top [1, frames / ratio]."""

    codes: np.ndarray
    top: np.ndarray | None
    num_samples: int


def encode_audio(model: AudioVQVAE, audio: np.ndarray, n_q: int | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Mono float audio at the model rate -> (codes [n_q, frames], top codes [1, frames / ratio]
    or None), padding the end to a whole top frame (a whole frame for a one-level model)."""
    padded = np.zeros(model.frames_for(audio.size) * model.hop, dtype=np.float32)
    padded[: audio.size] = audio
    device = next(model.parameters()).device
    codes, top = model.encode_levels(torch.from_numpy(padded)[None].to(device), n_q=n_q)
    bottom = codes[0].cpu().numpy().astype(codes_dtype(model.codebook_size))
    if top is None:
        return bottom, None
    return bottom, top[0].cpu().numpy().astype(codes_dtype(model.top_codebook_size or 2))


def encode_chunks(
    model: AudioVQVAE,
    blocks: Iterable[np.ndarray],
    chunk_frames: int = 2048,
    on_progress: Callable[[int], None] | None = None,
    n_q: int | None = None,
) -> EncodedAudio:
    """Encode audio that arrives in blocks (mono float32 at the model rate) in bounded memory.

    The encoder runs on chunks of about `chunk_frames` latent frames, each widened by the model's
    context on both sides and aligned to whole top frames, and keeps only the chunk's own frames:
    the codes equal those of `encode_audio` on the whole signal.
    """
    unit, ratio = model.top_hop, model.ratio  # work in whole top frames ("units")
    ctx = -(-model.context_frames // ratio)
    chunk = max(1, chunk_frames // ratio)
    pending = np.zeros(0, dtype=np.float32)  # samples from absolute index `offset` on
    offset = 0
    total = 0
    done = 0  # units encoded so far
    pieces: list[np.ndarray] = []
    top_pieces: list[np.ndarray] = []

    def encode_units(first: int, last: int, final: bool) -> None:
        lo = max(0, first - ctx)
        hi = last + ctx
        if final:
            hi = min(hi, -(-total // unit))
        segment = np.zeros((hi - lo) * unit, dtype=np.float32)
        piece = pending[lo * unit - offset : hi * unit - offset]
        segment[: piece.size] = piece
        codes, top = encode_audio(model, segment, n_q)
        pieces.append(codes[:, (first - lo) * ratio : (last - lo) * ratio])
        if top is not None:
            top_pieces.append(top[:, first - lo : last - lo])

    for block in blocks:
        pending = np.concatenate([pending, block.astype(np.float32, copy=False)])
        total += block.size
        while (total // unit) - ctx >= done + chunk:
            encode_units(done, done + chunk, final=False)
            done += chunk
            keep_from = max(0, done - ctx) * unit  # the next chunk's left context starts here
            pending = pending[keep_from - offset :]
            offset = keep_from
            if on_progress is not None:
                on_progress(done * unit)
    if total == 0:
        raise VQAudioError("no audio samples to encode")
    units = -(-total // unit)
    while done < units:
        last = min(units, done + chunk)
        encode_units(done, last, final=True)
        done = last
    if on_progress is not None:
        on_progress(total)
    top = np.concatenate(top_pieces, axis=1) if top_pieces else None
    return EncodedAudio(np.concatenate(pieces, axis=1), top, total)
