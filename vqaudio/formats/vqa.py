"""The `.vqa` compressed bitstream: codes range-coded under the learned prior's predictions.

Layout (little-endian): a 92-byte header, then the range coder's 32-bit words.

    magic "VQAUDIO\\0" | version u16 | header size u16 | VQ-VAE fingerprint 16s | prior fingerprint 16s
    | sample rate u32 | hop u32 | K u32 | n_q u16 | speaker u16 | samples u64 | frames u64
    | payload words u64 | CRC-32 of the codes u32 | CRC-32 of the header so far u32

Version 2 holds a two-level model's codes: the prior fingerprint is the top prior's, and before
the header's CRC come the bottom prior's fingerprint 16s | ratio u16 | top K u32 | top frames u64
(122 bytes in all). The payload codes the top codes under the top prior, then the bottom codes
under the bottom prior given the top, in one range-coder stream; the codes' CRC covers both.

Range coding (vqaudio.inference.entropy) uses `constriction` (a maintained Rust library with exact, tested coders; a
hand-written arithmetic coder is easy to get subtly wrong). Encoder and decoder must compute
bit-identical probabilities, so both run the same code path: the prior's cached one-step
evaluation (`PriorStepper`) on the CPU in float32 with one thread, batch 1, position by position,
then float64 probabilities quantised by constriction's `Categorical(perfect=False)`. The codes'
CRC-32 in the header turns any disagreement (say, a different CPU or PyTorch build rounding
differently) into a clear error rather than wrong audio.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vqaudio.errors import VQAudioError
from vqaudio.fileio import atomic_output

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


def codes_crc(codes: np.ndarray) -> int:
    """The CRC-32 of codes as little-endian int32, as the header stores it."""
    return zlib.crc32(np.ascontiguousarray(codes, dtype="<i4").tobytes())


def write_vqa(target: Path, data: bytes, force: bool = False) -> None:
    with atomic_output(target, force=force) as tmp:
        tmp.write_bytes(data)
