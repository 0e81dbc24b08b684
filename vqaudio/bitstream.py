"""The `.vqa` compressed bitstream: codes range-coded under the learned prior's predictions.

Layout (little-endian): a 92-byte header, then the range coder's 32-bit words.

    magic "VQAUDIO\\0" | version u16 | header size u16 | VQ-VAE fingerprint 16s | prior fingerprint 16s
    | sample rate u32 | hop u32 | K u32 | n_q u16 | speaker u16 | samples u64 | frames u64
    | payload words u64 | CRC-32 of the codes u32 | CRC-32 of the header so far u32

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
from vqaudio.prior import Prior

MAGIC = b"VQAUDIO\x00"
VERSION = 1
_LAYOUT = struct.Struct("<8sHH16s16sIIIHHQQQI")
HEADER_SIZE = _LAYOUT.size + 4  # + CRC-32 of the header
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

    def pack(self) -> bytes:
        body = _LAYOUT.pack(
            MAGIC, VERSION, HEADER_SIZE, self.vqvae_fingerprint.encode(), self.prior_fingerprint.encode(),
            self.sample_rate, self.hop, self.codebook_size, self.n_q, self.speaker_index,
            self.num_samples, self.frames, self.payload_words, self.codes_crc,
        )  # fmt: skip
        return body + struct.pack("<I", zlib.crc32(body))


def check_one_level(prior: Prior) -> None:
    """The .vqa format codes the codes of a one-level model under one prior."""
    if prior.level is not None:
        raise VQAudioError(
            f"{prior.checkpoint}: a {prior.level} prior of a two-level model; .vqa bitstreams code one-level models "
            "(store two-level codes with vqaudio encode as .npz, and see their bits under both priors with vqaudio eval)"
        )


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
    if fields[1] != VERSION:
        raise VQAudioError(f"{source}: .vqa format version {fields[1]} is not supported (this vqaudio reads {VERSION})")
    (stored_crc,) = struct.unpack("<I", data[_LAYOUT.size : HEADER_SIZE])
    if fields[2] != HEADER_SIZE or zlib.crc32(data[: _LAYOUT.size]) != stored_crc:
        raise VQAudioError(f"{source}: the .vqa header is corrupt (checksum mismatch)")
    header = VqaHeader(fields[3].decode(), fields[4].decode(), *fields[5:])
    expected = HEADER_SIZE + 4 * header.payload_words
    if len(data) != expected:
        problem = "truncated" if len(data) < expected else "has trailing bytes"
        raise VQAudioError(f"{source}: {problem}: the header promises {expected} bytes, the file has {len(data)}")
    return header, np.frombuffer(data, dtype="<u4", offset=HEADER_SIZE).copy()


@contextlib.contextmanager
def _deterministic_cpu(prior: Prior) -> Iterator[None]:
    """The prior on the CPU with one thread, as both sides of the coder must run it."""
    threads = torch.get_num_threads()
    device = next(prior.model.parameters()).device
    prior.model.to("cpu")
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        prior.model.to(device)


def _codes_crc(codes: np.ndarray) -> int:
    return zlib.crc32(np.ascontiguousarray(codes, dtype="<i4").tobytes())


def _model_family():
    import constriction

    return constriction.stream.model.Categorical(perfect=False)


@dataclass
class Encoded:
    data: bytes
    estimated_bits: float  # sum of -log2 p(code) under the prior: what an ideal coder would spend


def entropy_encode(
    prior: Prior, codes: np.ndarray, speaker_index: int, num_samples: int, on_progress: Callable[[int], None] | None = None
) -> Encoded:
    """Codes [n_q, frames] -> the bytes of a .vqa file."""
    check_one_level(prior)
    import constriction

    n_q, frames = codes.shape
    tokens = np.ascontiguousarray(codes.T.reshape(-1), dtype=np.int32)  # step by step, level by level
    family = _model_family()
    encoder = constriction.stream.queue.RangeEncoder()
    bits = 0.0
    with _deterministic_cpu(prior), torch.no_grad():
        stepper = prior.model.start(torch.tensor([speaker_index]))
        for position, symbol in enumerate(tokens):
            probs = stepper.log_probs()[0].double().exp().numpy()
            encoder.encode(tokens[position : position + 1], family, probs[None])
            bits -= math.log2(max(float(probs[symbol]), 1e-300))
            stepper.feed(torch.tensor([int(symbol)]))
            if on_progress is not None and (position + 1) % n_q == 0:
                on_progress((position + 1) // n_q)
    payload = encoder.get_compressed().astype("<u4")
    header = VqaHeader(
        prior.codec.fingerprint, prior.fingerprint, prior.codec.sample_rate, prior.codec.hop, prior.codec.codebook_size,
        n_q, speaker_index, num_samples, frames, int(payload.size), _codes_crc(codes),
    )  # fmt: skip
    return Encoded(header.pack() + payload.tobytes(), bits)


def check_prior_matches(prior: Prior, header: VqaHeader, source: Path) -> None:
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


def entropy_decode(
    prior: Prior, data: bytes, source: Path, on_progress: Callable[[int], None] | None = None
) -> tuple[np.ndarray, VqaHeader]:
    """The bytes of a .vqa file -> (codes [n_q, frames], header), exactly the codes that were encoded."""
    check_one_level(prior)
    import constriction

    header, payload = parse_vqa(data, source)
    check_prior_matches(prior, header, source)
    n_q, frames = header.n_q, header.frames
    if frames != max(1, -(-header.num_samples // header.hop)):
        raise VQAudioError(f"{source}: the header's frame count does not match its sample count; the file is corrupt")
    if header.num_samples > MAX_SECONDS * header.sample_rate:
        raise VQAudioError(f"{source}: the header claims {header.num_samples} samples (over {MAX_SECONDS // 3600} h); refused")
    family = _model_family()
    decoder = constriction.stream.queue.RangeDecoder(payload)
    tokens = np.empty(frames * n_q, dtype=np.int64)
    with _deterministic_cpu(prior), torch.no_grad():
        stepper = prior.model.start(torch.tensor([header.speaker_index]))
        for position in range(tokens.size):
            probs = stepper.log_probs()[0].double().exp().numpy()
            try:
                tokens[position] = int(decoder.decode(family, probs[None])[0])
            except Exception as exc:  # noqa: BLE001 - the coder's own errors on malformed data
                raise VQAudioError(f"{source}: the compressed codes are corrupt ({exc})") from None
            stepper.feed(torch.tensor([tokens[position]]))
            if on_progress is not None and (position + 1) % n_q == 0:
                on_progress((position + 1) // n_q)
    codes = tokens.reshape(frames, n_q).T.copy()
    if _codes_crc(codes) != header.codes_crc:
        raise VQAudioError(
            f"{source}: decoded codes fail their checksum: the file is corrupt, or this machine computes the "
            "prior's probabilities differently from the one that encoded it"
        )
    return codes, header


def write_vqa(target: Path, encoded: Encoded, force: bool = False) -> None:
    with atomic_output(target, force=force) as tmp:
        tmp.write_bytes(encoded.data)
