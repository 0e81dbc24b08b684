"""The `.vqa` compressed bitstream: codes range-coded under the learned prior's predictions.

Layout (little-endian): a 92-byte header, then the range coder's 32-bit words.

    magic "VQAUDIO\\0" | version u16 | header size u16 | VQ-VAE fingerprint 16s | prior fingerprint 16s
    | sample rate u32 | hop u32 | K u32 | n_q u16 | speaker u16 | samples u64 | frames u64
    | payload words u64 | CRC-32 of the codes u32 | CRC-32 of the header so far u32

Version 2 holds a two-level model's codes: the prior fingerprint is the top prior's, and before
the header's CRC come the bottom prior's fingerprint 16s | ratio u16 | top K u32 | top frames u64
(122 bytes in all). The payload codes the top codes under the top prior, then the bottom codes
under the bottom prior given the top, in one range-coder stream; the codes' CRC covers both.

Range coding uses `constriction` (a maintained Rust library with exact, tested coders; a
hand-written arithmetic coder is easy to get subtly wrong). Encoder and decoder must compute
bit-identical probabilities, so both run the same code path: the prior's cached one-step
evaluation (`PriorStepper`) on the CPU in float32 with one thread, batch 1, position by position,
then float64 probabilities quantised by constriction's `Categorical(perfect=False)`. The codes'
CRC-32 in the header turns any disagreement (say, a different CPU or PyTorch build rounding
differently) into a clear error rather than wrong audio.
"""

from __future__ import annotations

import contextlib
import math
import struct
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vqaudio.errors import VQAudioError
from vqaudio.fileio import atomic_output
from vqaudio.models.code_prior import PriorStepper
from vqaudio.prior import Prior

MAGIC = b"VQAUDIO\x00"
VERSION = 1  # one-level codes under one prior
VERSION_LEVELS = 2  # two-level codes under a top and a bottom prior
_LAYOUT = struct.Struct("<8sHH16s16sIIIHHQQQI")
_LEVELS = struct.Struct("<16sHIQ")  # version 2: bottom prior fingerprint, ratio, top K, top frames
HEADER_SIZE = _LAYOUT.size + 4  # + CRC-32 of the header
HEADER_SIZE_LEVELS = _LAYOUT.size + _LEVELS.size + 4
MAX_SECONDS = 24 * 3600  # a header claiming more is refused before anything is allocated


@dataclass
class VqaHeader:
    vqvae_fingerprint: str
    prior_fingerprint: str
    sample_rate: int
    hop: int
    codebook_size: int
    n_q: int
    speaker_index: int
    num_samples: int
    frames: int
    payload_words: int
    codes_crc: int
    bottom_prior_fingerprint: str | None = None  # two-level files (version 2) only
    ratio: int = 1
    top_codebook_size: int = 0
    top_frames: int = 0

    @property
    def two_level(self) -> bool:
        return self.bottom_prior_fingerprint is not None

    @property
    def size(self) -> int:
        return HEADER_SIZE_LEVELS if self.two_level else HEADER_SIZE

    def pack(self) -> bytes:
        body = _LAYOUT.pack(
            MAGIC, VERSION_LEVELS if self.two_level else VERSION, self.size, self.vqvae_fingerprint.encode(),
            self.prior_fingerprint.encode(), self.sample_rate, self.hop, self.codebook_size, self.n_q, self.speaker_index,
            self.num_samples, self.frames, self.payload_words, self.codes_crc,
        )  # fmt: skip
        if self.bottom_prior_fingerprint is not None:
            body += _LEVELS.pack(self.bottom_prior_fingerprint.encode(), self.ratio, self.top_codebook_size, self.top_frames)
        return body + struct.pack("<I", zlib.crc32(body))


def check_prior_pair(prior: Prior, bottom_prior: Prior | None) -> None:
    """A one-level model's codes go under one prior; a two-level model's under its top prior and
    its bottom prior (given as `bottom_prior`)."""
    if prior.level == "bottom":
        raise VQAudioError(f"{prior.checkpoint}: a bottom prior; give the top prior (--prior) and this one with --bottom")
    if prior.level == "top" and bottom_prior is None:
        raise VQAudioError(f"{prior.checkpoint}: a top prior; two-level codes are coded with its bottom prior too (--bottom)")
    if prior.level is None and bottom_prior is not None:
        raise VQAudioError(f"--bottom: {prior.checkpoint} is a prior over one-level codes; there is no bottom level")
    if bottom_prior is not None and (bottom_prior.level != "bottom" or bottom_prior.codec.fingerprint != prior.codec.fingerprint):
        raise VQAudioError(f"{bottom_prior.checkpoint}: not a bottom prior over {prior.codec.checkpoint}")


def is_vqa(path: Path) -> bool:
    """Whether `path` starts with the .vqa magic bytes."""
    try:
        with open(path, "rb") as handle:
            return handle.read(len(MAGIC)) == MAGIC
    except OSError:
        return False


def parse_vqa(data: bytes, source: Path) -> tuple[VqaHeader, np.ndarray]:
    """Check and split a .vqa file: (header, payload words)."""
    if len(data) < HEADER_SIZE:
        raise VQAudioError(f"{source}: truncated .vqa file ({len(data)} bytes; its header alone is {HEADER_SIZE})")
    if data[: len(MAGIC)] != MAGIC:
        raise VQAudioError(f"{source}: not a vqaudio .vqa file (wrong magic bytes)")
    fields = _LAYOUT.unpack(data[: _LAYOUT.size])
    if fields[1] not in (VERSION, VERSION_LEVELS):
        raise VQAudioError(f"{source}: .vqa format version {fields[1]} is not supported (this vqaudio reads 1 and 2)")
    size = HEADER_SIZE if fields[1] == VERSION else HEADER_SIZE_LEVELS
    if len(data) < size:
        raise VQAudioError(f"{source}: truncated .vqa file ({len(data)} bytes; its header alone is {size})")
    (stored_crc,) = struct.unpack("<I", data[size - 4 : size])
    if fields[2] != size or zlib.crc32(data[: size - 4]) != stored_crc:
        raise VQAudioError(f"{source}: the .vqa header is corrupt (checksum mismatch)")

    def text(raw: bytes) -> str:
        return raw.decode("ascii", "replace")

    header = VqaHeader(text(fields[3]), text(fields[4]), *fields[5:])
    if fields[1] == VERSION_LEVELS:
        bottom_print, header.ratio, header.top_codebook_size, header.top_frames = _LEVELS.unpack(data[_LAYOUT.size : size - 4])
        header.bottom_prior_fingerprint = text(bottom_print)
    expected = size + 4 * header.payload_words
    if len(data) != expected:
        problem = "truncated" if len(data) < expected else "has trailing bytes"
        raise VQAudioError(f"{source}: {problem}: the header promises {expected} bytes, the file has {len(data)}")
    return header, np.frombuffer(data, dtype="<u4", offset=size).copy()


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


def _codes_crc(codes: np.ndarray) -> int:
    return zlib.crc32(np.ascontiguousarray(codes, dtype="<i4").tobytes())


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
    check_prior_pair(prior, bottom_prior)
    if (top is None) != (bottom_prior is None):
        raise VQAudioError("two-level codes are coded with their top codes and both priors; one-level codes with one prior")
    import constriction

    n_q, frames = codes.shape
    encoder = constriction.stream.queue.RangeEncoder()
    speaker = torch.tensor([speaker_index])
    with _deterministic_cpu(prior, bottom_prior):
        if top is None or bottom_prior is None:
            bits = _encode_tokens(encoder, prior.model.start(speaker), _tokens(codes), n_q, 0, on_progress)
            crc = _codes_crc(codes)
        else:
            bits = _encode_tokens(encoder, prior.model.start(speaker), _tokens(top), 1, 0, on_progress)
            stepper = bottom_prior.model.start(speaker, torch.as_tensor(top, dtype=torch.long)[None])
            bits += _encode_tokens(encoder, stepper, _tokens(codes), n_q, top.shape[1], on_progress)
            crc = _codes_crc(np.concatenate([top.ravel(), codes.ravel()]))
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
            f"{source}: coded with prior {header.prior_fingerprint}, but {prior.checkpoint} is prior {prior.fingerprint}; "
            "pass --prior with the checkpoint that encoded it"
        )
    if header.vqvae_fingerprint != prior.codec.fingerprint:
        raise VQAudioError(f"{source}: made by VQ-VAE {header.vqvae_fingerprint}, not {prior.codec.fingerprint}")
    if (header.codebook_size, header.n_q, header.hop) != (prior.codec.codebook_size, prior.codec.n_q, prior.codec.hop):
        raise VQAudioError(f"{source}: codebook size, n_q or hop differ from {prior.checkpoint}'s VQ-VAE")
    if header.speaker_index >= len(prior.codec.speakers):
        raise VQAudioError(f"{source}: speaker {header.speaker_index} is not one of the model's {len(prior.codec.speakers)}")
    if header.two_level != prior.codec.two_level:
        levels = "two-level" if header.two_level else "one-level"
        raise VQAudioError(f"{source}: holds {levels} codes, but {prior.codec.checkpoint} is not a {levels} model")
    if header.two_level:
        check_prior_pair(prior, bottom_prior)
        assert bottom_prior is not None
        if header.bottom_prior_fingerprint != bottom_prior.fingerprint:
            raise VQAudioError(
                f"{source}: coded with bottom prior {header.bottom_prior_fingerprint}, but {bottom_prior.checkpoint} is "
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
            top = _decode_tokens(decoder, prior.model.start(speaker), header.top_frames, 1, 0, on_progress, source)[None]
            stepper = bottom_prior.model.start(speaker, torch.as_tensor(top)[None])
            tokens = _decode_tokens(decoder, stepper, frames * n_q, n_q, header.top_frames, on_progress, source)
        else:
            tokens = _decode_tokens(decoder, prior.model.start(speaker), frames * n_q, n_q, 0, on_progress, source)
    codes = tokens.reshape(frames, n_q).T.copy()
    coded = codes if top is None else np.concatenate([top.ravel(), codes.ravel()])
    if _codes_crc(coded) != header.codes_crc:
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


def write_vqa(target: Path, encoded: Encoded, force: bool = False) -> None:
    with atomic_output(target, force=force) as tmp:
        tmp.write_bytes(encoded.data)
