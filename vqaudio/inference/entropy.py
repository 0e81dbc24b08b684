"""Entropy coding: codes range-coded under the learned prior into `.vqa` files, and back.

The file layout is `vqaudio.formats.vqa`'s. Range coding uses `constriction` (a maintained Rust
library with exact, tested coders; a hand-written arithmetic coder is easy to get subtly wrong).
Encoder and decoder must compute bit-identical probabilities, so both run the same code path:
the prior's cached one-step evaluation (`PriorStepper`) on the CPU in float32 with one thread,
batch 1, position by position, then float64 probabilities quantised by constriction's
`Categorical(perfect=False)`.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vqaudio.audio.io import iter_audio
from vqaudio.errors import VQAudioError
from vqaudio.fileio import check_writable
from vqaudio.formats.vqa import MAX_SECONDS, VqaHeader, codes_crc, parse_vqa, write_vqa
from vqaudio.generation.code_prior import PriorStepper
from vqaudio.inference.codec import DecodeRequest, guess_speaker
from vqaudio.inference.load import Codec, Prior
from vqaudio.inference.priors import check_pair
from vqaudio.models.streaming import encode_chunks


@contextlib.contextmanager
def _deterministic_cpu(*priors: Prior | None) -> Iterator[None]:
    """The priors on the CPU with one thread, as both sides of the coder must run them."""
    threads = torch.get_num_threads()
    models = [p.model for p in priors if p is not None]
    devices = [next(m.parameters()).device for m in models]
    for model in models:
        model.to("cpu")
    torch.set_num_threads(1)
    try:
        with torch.no_grad():
            yield
    finally:
        torch.set_num_threads(threads)
        for model, device in zip(models, devices):
            model.to(device)


def _model_family():
    import constriction

    return constriction.stream.model.Categorical(perfect=False)


@dataclass
class Encoded:
    data: bytes
    estimated_bits: float  # sum of -log2 p(code) under the prior: what an ideal coder would spend


def _tokens(codes: np.ndarray) -> np.ndarray:
    """Codes [n_q, frames] -> tokens step by step, level by level (the prior's order)."""
    return np.ascontiguousarray(codes.T.reshape(-1), dtype=np.int32)


def _encode_tokens(encoder, stepper: PriorStepper, tokens: np.ndarray, n_q: int, done: int, on_progress) -> float:
    """Range-code `tokens` under the stepper's predictions; returns their -log2 probability."""
    family = _model_family()
    bits = 0.0
    for position, symbol in enumerate(tokens):
        probs = stepper.log_probs()[0].double().exp().numpy()
        encoder.encode(tokens[position : position + 1], family, probs[None])
        bits -= math.log2(max(float(probs[symbol]), 1e-300))
        stepper.feed(torch.tensor([int(symbol)]))
        if on_progress is not None and (position + 1) % n_q == 0:
            on_progress(done + (position + 1) // n_q)
    return bits


def _decode_tokens(decoder, stepper: PriorStepper, count: int, n_q: int, done: int, on_progress, source: Path) -> np.ndarray:
    family = _model_family()
    tokens = np.empty(count, dtype=np.int64)
    for position in range(count):
        probs = stepper.log_probs()[0].double().exp().numpy()
        try:
            tokens[position] = int(decoder.decode(family, probs[None])[0])
        except Exception as exc:  # noqa: BLE001 - the coder's own errors on malformed data
            raise VQAudioError(f"{source}: the compressed codes are corrupt ({exc})") from None
        stepper.feed(torch.tensor([tokens[position]]))
        if on_progress is not None and (position + 1) % n_q == 0:
            on_progress(done + (position + 1) // n_q)
    return tokens


def entropy_encode(
    prior: Prior,
    codes: np.ndarray,
    speaker_index: int,
    num_samples: int,
    on_progress: Callable[[int], None] | None = None,
    top: np.ndarray | None = None,
    bottom_prior: Prior | None = None,
) -> Encoded:
    """Codes [n_q, frames] -> the bytes of a .vqa file. A two-level model's codes come with their
    `top` codes [1, frames / ratio]; `prior` is then the top prior and `bottom_prior` the bottom
    one. `on_progress` counts code frames done (top frames first, then bottom frames)."""
    check_pair(prior, bottom_prior)
    if (top is None) != (bottom_prior is None):
        raise VQAudioError("two-level codes are coded with their top codes and both priors; one-level codes with one prior")
    import constriction

    n_q, frames = codes.shape
    encoder = constriction.stream.queue.RangeEncoder()
    speaker = torch.tensor([speaker_index])
    with _deterministic_cpu(prior, bottom_prior):
        if top is None or bottom_prior is None:
            bits = _encode_tokens(encoder, PriorStepper(prior.model, speaker), _tokens(codes), n_q, 0, on_progress)
            crc = codes_crc(codes)
        else:
            bits = _encode_tokens(encoder, PriorStepper(prior.model, speaker), _tokens(top), 1, 0, on_progress)
            stepper = PriorStepper(bottom_prior.model, speaker, torch.as_tensor(top, dtype=torch.long)[None])
            bits += _encode_tokens(encoder, stepper, _tokens(codes), n_q, top.shape[1], on_progress)
            crc = codes_crc(np.concatenate([top.ravel(), codes.ravel()]))
    payload = encoder.get_compressed().astype("<u4")
    header = VqaHeader(
        prior.codec.fingerprint, prior.fingerprint, prior.codec.sample_rate, prior.codec.hop, prior.codec.codebook_size,
        n_q, speaker_index, num_samples, frames, int(payload.size), crc,
    )  # fmt: skip
    if top is not None and bottom_prior is not None:
        header.bottom_prior_fingerprint = bottom_prior.fingerprint
        header.ratio, header.top_codebook_size, header.top_frames = prior.codec.ratio, prior.model.codebook_size, top.shape[1]
    return Encoded(header.pack() + payload.tobytes(), bits)


def check_prior_matches(prior: Prior, header: VqaHeader, source: Path, bottom_prior: Prior | None = None) -> None:
    if header.prior_fingerprint != prior.fingerprint:
        raise VQAudioError(
            f"{source}: coded with prior {header.prior_fingerprint!r}, but {prior.checkpoint} is prior {prior.fingerprint}; "
            "pass --prior with the checkpoint that encoded it"
        )
    if header.vqvae_fingerprint != prior.codec.fingerprint:
        raise VQAudioError(f"{source}: made by VQ-VAE {header.vqvae_fingerprint!r}, not {prior.codec.fingerprint}")
    if (header.codebook_size, header.n_q, header.hop) != (prior.codec.codebook_size, prior.codec.n_q, prior.codec.hop):
        raise VQAudioError(f"{source}: codebook size, n_q or hop differ from {prior.checkpoint}'s VQ-VAE")
    if header.speaker_index >= len(prior.codec.speakers):
        raise VQAudioError(f"{source}: speaker {header.speaker_index} is not one of the model's {len(prior.codec.speakers)}")
    if header.two_level != prior.codec.two_level:
        levels = "two-level" if header.two_level else "one-level"
        raise VQAudioError(f"{source}: holds {levels} codes, but {prior.codec.checkpoint} is not a {levels} model")
    if header.two_level:
        check_pair(prior, bottom_prior)
        assert bottom_prior is not None
        if header.bottom_prior_fingerprint != bottom_prior.fingerprint:
            raise VQAudioError(
                f"{source}: coded with bottom prior {header.bottom_prior_fingerprint!r}, but {bottom_prior.checkpoint} is "
                f"{bottom_prior.fingerprint}; pass --bottom with the checkpoint that encoded it"
            )
        if (header.ratio, header.top_codebook_size) != (prior.codec.ratio, prior.model.codebook_size):
            raise VQAudioError(f"{source}: the top level's ratio or K differ from {prior.codec.checkpoint}")
        if header.top_frames * header.ratio != header.frames:
            raise VQAudioError(f"{source}: the header's top and bottom frame counts disagree; the file is corrupt")


def entropy_decode_levels(
    prior: Prior, data: bytes, source: Path, on_progress: Callable[[int], None] | None = None, bottom_prior: Prior | None = None
) -> tuple[np.ndarray, np.ndarray | None, VqaHeader]:
    """The bytes of a .vqa file -> (codes [n_q, frames], top codes [1, frames / ratio] or None,
    header): exactly the codes that were encoded. Two-level files need the bottom prior too."""
    import constriction

    header, payload = parse_vqa(data, source)
    check_prior_matches(prior, header, source, bottom_prior)
    n_q, frames = header.n_q, header.frames
    block = header.hop * header.ratio
    if frames != max(1, -(-header.num_samples // block)) * header.ratio:
        raise VQAudioError(f"{source}: the header's frame count does not match its sample count; the file is corrupt")
    if header.num_samples > MAX_SECONDS * header.sample_rate:
        raise VQAudioError(f"{source}: the header claims {header.num_samples} samples (over {MAX_SECONDS // 3600} h); refused")
    decoder = constriction.stream.queue.RangeDecoder(payload)
    speaker = torch.tensor([header.speaker_index])
    top = None
    with _deterministic_cpu(prior, bottom_prior):
        if header.two_level and bottom_prior is not None:
            top = _decode_tokens(decoder, PriorStepper(prior.model, speaker), header.top_frames, 1, 0, on_progress, source)[None]
            stepper = PriorStepper(bottom_prior.model, speaker, torch.as_tensor(top)[None])
            tokens = _decode_tokens(decoder, stepper, frames * n_q, n_q, header.top_frames, on_progress, source)
        else:
            tokens = _decode_tokens(decoder, PriorStepper(prior.model, speaker), frames * n_q, n_q, 0, on_progress, source)
    codes = tokens.reshape(frames, n_q).T.copy()
    coded = codes if top is None else np.concatenate([top.ravel(), codes.ravel()])
    if codes_crc(coded) != header.codes_crc:
        raise VQAudioError(
            f"{source}: decoded codes fail their checksum: the file is corrupt, or this machine computes the "
            "prior's probabilities differently from the one that encoded it"
        )
    return codes, top, header


def entropy_decode(
    prior: Prior, data: bytes, source: Path, on_progress: Callable[[int], None] | None = None
) -> tuple[np.ndarray, VqaHeader]:
    """The bytes of a one-level .vqa file -> (codes [n_q, frames], header), exactly the codes that were encoded."""
    codes, _, header = entropy_decode_levels(prior, data, source, on_progress)
    return codes, header


@dataclass
class VqaWritten:
    """What `encode_vqa_file` wrote."""

    bytes: int
    seconds: float
    raw_bitrate: float
    estimated_bits: float
    speaker: str
    speaker_guessed: bool  # no speaker was given or found in the file name: speaker 0 was recorded

    @property
    def bitrate(self) -> float:
        return 8 * self.bytes / self.seconds


def encode_vqa_file(
    source: Path,
    target: Path,
    prior: Prior,
    bottom_prior: Prior | None = None,
    speaker: str | None = None,
    n_q: int | None = None,
    force: bool = False,
    on_progress: Callable[[int, int], None] | None = None,
) -> VqaWritten:
    """Encode a recording into a .vqa file under `prior` (and, for a two-level model, its
    `bottom_prior`). `on_progress(done, total)` counts code frames."""
    check_writable(target, force)
    codec = prior.codec
    if n_q is not None and n_q != codec.n_q:
        raise VQAudioError(f"--n-q {n_q}: the prior models all {codec.n_q} codebook(s); --entropy codes them all")
    check_pair(prior, bottom_prior)
    found = speaker if speaker is not None else guess_speaker(source, codec.speakers)
    index = codec.speaker_index(found)
    audio = encode_chunks(codec.model, iter_audio(source, codec.sample_rate))
    total = audio.codes.shape[1] + (audio.top.shape[1] if audio.top is not None else 0)
    update = (lambda done: on_progress(done, total)) if on_progress is not None else None
    encoded = entropy_encode(prior, audio.codes, index, audio.num_samples, update, audio.top, bottom_prior)
    write_vqa(target, encoded.data, force)
    seconds = audio.num_samples / codec.sample_rate
    return VqaWritten(len(encoded.data), seconds, codec.bitrate(), encoded.estimated_bits, codec.speakers[index], found is None)


def open_vqa(
    source: Path,
    prior: Prior,
    bottom_prior: Prior | None = None,
    speaker: str | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> tuple[Codec, DecodeRequest]:
    """Entropy-decode a .vqa file into the codes, top codes, speaker and length to decode."""
    codes, top, header = entropy_decode_levels(prior, source.read_bytes(), source, on_progress, bottom_prior)
    index = prior.codec.speaker_index(speaker) if speaker is not None else header.speaker_index
    return prior.codec, DecodeRequest(codes, index, header.num_samples, top)
