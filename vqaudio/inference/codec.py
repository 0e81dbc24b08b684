"""Using a trained audio VQ-VAE as a codec: audio files to codes files and back, and voice conversion.

The bytes of codes files are `vqaudio.formats.codes`'s; the encoder's chunking is
`vqaudio.models.streaming`'s; sampling the decoder is `vqaudio.generation.decode`'s.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vqaudio.audio.io import iter_audio, open_wav_writer
from vqaudio.errors import VQAudioError
from vqaudio.fileio import check_writable
from vqaudio.formats.codes import (
    SIDECAR_VERSION,
    SIDECAR_VERSION_LEVELS,
    CodesSidecar,
    TopCodes,
    read_code_levels,
    sidecar_for,
    write_codes_file,
)
from vqaudio.generation.decode import iter_decode
from vqaudio.generation.engine import Backend
from vqaudio.inference.load import Codec
from vqaudio.models.streaming import encode_chunks


def encode_file(
    codec: Codec,
    source: Path,
    target: Path,
    speaker: str | int | None = None,
    force: bool = False,
    on_progress: Callable[[int], None] | None = None,
    n_q: int | None = None,
) -> CodesSidecar:
    """Encode `source` to `target` (.npy; .npz for a two-level model) and its sidecar, streaming
    the audio; returns the sidecar.

    The file holds [frames] codes for one codebook, [n_q, frames] for several."""
    check_codes_suffix(codec, target)
    check_writable(target, force)
    check_writable(sidecar_for(target), force)
    if speaker is None:
        speaker = guess_speaker(source, codec.speakers)
    speaker_index = codec.speaker_index(speaker) if speaker is not None else None
    n_q = codec.check_n_q(n_q)
    encoded = encode_chunks(codec.model, iter_audio(source, codec.sample_rate), on_progress=on_progress, n_q=n_q)
    return write_codes(codec, encoded.codes, target, speaker_index, encoded.num_samples, str(source), force, encoded.top)


def check_codes_suffix(codec: Codec, target: Path) -> None:
    """Two-level codes go in a .npz (bottom and top arrays), one-level codes in a .npy."""
    if codec.two_level and target.suffix.lower() != ".npz":
        raise VQAudioError(
            f"{target}: {codec.checkpoint} is a two-level model, whose codes are written as a .npz "
            f"(bottom and top arrays); name the output {target.with_suffix('.npz').name}"
        )
    if not codec.two_level and target.suffix.lower() == ".npz":
        raise VQAudioError(f"{target}: one-level codes are written as a .npy; name the output {target.with_suffix('.npy').name}")


def write_codes(
    codec: Codec,
    codes: np.ndarray,
    target: Path,
    speaker_index: int | None,
    num_samples: int,
    source: str,
    force: bool = False,
    top: np.ndarray | None = None,
) -> CodesSidecar:
    """Write codes [n_q, frames] to `target` (.npy; [frames] for one codebook) and its sidecar; a
    two-level model's bottom codes and `top` codes [1, frames / ratio] go in a .npz."""
    check_codes_suffix(codec, target)
    check_writable(target, force)
    check_writable(sidecar_for(target), force)
    if (top is None) == codec.two_level:
        raise VQAudioError(f"{target}: top codes must be given exactly for a two-level model")
    n_q = codes.shape[0]
    sidecar = CodesSidecar(
        version=SIDECAR_VERSION if top is None else SIDECAR_VERSION_LEVELS,
        fingerprint=codec.fingerprint,
        sample_rate=codec.sample_rate,
        hop=codec.hop,
        codebook_size=codec.codebook_size,
        n_q=n_q,
        bitrate=codec.bitrate(n_q),
        speaker=codec.speakers[speaker_index] if speaker_index is not None else None,
        speaker_index=speaker_index,
        num_samples=int(num_samples),
        shape=[codes.shape[-1]] if n_q == 1 else list(codes.shape),
        source=source,
    )
    if top is not None:
        sidecar.top = TopCodes(codebook_size=codec.top_codebook_size or 2, hop=codec.top_hop, frames=int(top.shape[-1]))
        sidecar.ratio = codec.ratio
    write_codes_file(target, codes, top, sidecar)
    return sidecar


def guess_speaker(source: Path, speakers: list[str]) -> str | None:
    """A known speaker named by the file's folder (`p225/x.wav`) or name prefix (`p225_003.wav`)."""
    for candidate in (source.parent.name, source.stem.split("_")[0]):
        if candidate in speakers:
            return candidate
    return None


def check_compatible(codec: Codec, codes: np.ndarray, sidecar: CodesSidecar, path: Path, top: np.ndarray | None = None) -> None:
    """Refuse codes made by another model, or codes outside the codebook."""
    if (top is not None) != codec.two_level:
        have, need = ("two-level", "one-level") if top is not None else ("one-level", "two-level")
        raise VQAudioError(f"{path}: holds {have} codes but {codec.checkpoint} is a {need} model; decode with the model that encoded them")
    if sidecar.codebook_size != codec.codebook_size:
        raise VQAudioError(
            f"{path}: codes are for a codebook of {sidecar.codebook_size}, "
            f"but {codec.checkpoint} has K = {codec.codebook_size}; decode with the model that encoded them"
        )
    if sidecar.fingerprint != codec.fingerprint:
        raise VQAudioError(
            f"{path}: made by model {sidecar.fingerprint!r}, but {codec.checkpoint} is model {codec.fingerprint}; "
            "pass -c with the checkpoint that encoded them"
        )
    if sidecar.hop != codec.hop or sidecar.sample_rate != codec.sample_rate:
        raise VQAudioError(f"{path}: sidecar hop/sample rate do not match {codec.checkpoint}")
    if codes.shape[0] > codec.n_q:
        raise VQAudioError(f"{path}: {codes.shape[0]} codebooks, but {codec.checkpoint} has {codec.n_q}")
    if codes.min() < 0 or codes.max() >= codec.codebook_size:
        raise VQAudioError(f"{path}: codes must lie in 0..{codec.codebook_size - 1}, found {codes.min()}..{codes.max()}")
    expected_frames = codec.frames_for(sidecar.num_samples)
    if codes.shape[-1] != expected_frames:
        raise VQAudioError(
            f"{path}: {codes.shape[-1]} frames of codes but the sidecar's num_samples needs {expected_frames}; "
            "the files do not belong together"
        )
    if top is not None:
        top_size = codec.top_codebook_size or 2
        if sidecar.top is None or sidecar.top.codebook_size != top_size or sidecar.top.hop != codec.top_hop:
            raise VQAudioError(f"{path}: the sidecar's top level does not match {codec.checkpoint}")
        if top.shape[-1] * codec.ratio != codes.shape[-1]:
            raise VQAudioError(f"{path}: {top.shape[-1]} top frames do not cover {codes.shape[-1]} bottom frames (ratio {codec.ratio})")
        if top.min() < 0 or top.max() >= top_size:
            raise VQAudioError(f"{path}: top codes must lie in 0..{top_size - 1}, found {top.min()}..{top.max()}")


def iter_decode_codes(
    codec: Codec,
    codes: np.ndarray,
    speaker: int,
    num_samples: int | None = None,
    temperature: float = 1.0,
    seed: int = 0,
    backend: Backend = "auto",
    top: np.ndarray | None = None,
) -> Iterator[np.ndarray]:
    """Codes [frames] or [n_q, frames] (and a two-level model's `top` [1, frames / ratio]) ->
    successive float32 audio blocks, stopping at `num_samples`."""
    generator = torch.Generator(device=codec.device).manual_seed(seed)
    tensor = torch.as_tensor(codes.astype(np.int64)).reshape(1, -1, codes.shape[-1]).to(codec.device)
    top_tensor = None if top is None else torch.as_tensor(top.astype(np.int64)).reshape(1, 1, -1).to(codec.device)
    spk = torch.tensor([speaker], device=codec.device)
    produced = 0
    for block in iter_decode(codec.model, tensor, spk, temperature, generator, backend, top_tensor):
        audio = block[0].float().numpy()
        if num_samples is not None:
            audio = audio[: max(0, num_samples - produced)]
        produced += audio.size
        if audio.size:
            yield audio


def decode_codes(
    codec: Codec,
    codes: np.ndarray,
    speaker: int,
    num_samples: int | None = None,
    temperature: float = 1.0,
    seed: int = 0,
    backend: Backend = "auto",
    top: np.ndarray | None = None,
) -> np.ndarray:
    """Codes [frames] or [n_q, frames] (and `top` codes) -> float32 audio, trimmed to `num_samples` when given."""
    return np.concatenate(list(iter_decode_codes(codec, codes, speaker, num_samples, temperature, seed, backend, top)))


@dataclass
class Decoded:
    """What a decode wrote."""

    speaker: str
    num_samples: int
    sample_rate: int

    @property
    def seconds(self) -> float:
        return self.num_samples / self.sample_rate


@dataclass
class DecodeRequest:
    """Codes checked against the model, with the speaker and length to decode them at."""

    codes: np.ndarray
    speaker_index: int
    num_samples: int
    top: np.ndarray | None = None


def open_codes(codec: Codec, source: Path, target: Path, speaker: str | int | None = None, force: bool = False) -> DecodeRequest:
    """Every check before decoding starts: the output may be written, the codes fit this model."""
    check_writable(target, force)
    codes, top, sidecar = read_code_levels(source)
    check_compatible(codec, codes, sidecar, source, top)
    if speaker is None:
        speaker = sidecar.speaker or sidecar.speaker_index
    return DecodeRequest(codes, codec.speaker_index(speaker), sidecar.num_samples, top)


def decode_file(
    codec: Codec,
    request: DecodeRequest,
    target: Path,
    force: bool = False,
    temperature: float = 1.0,
    seed: int = 0,
    on_progress: Callable[[int], None] | None = None,
    backend: Backend = "auto",
) -> Decoded:
    """Decode checked codes into a wav at the model's rate with the original length.

    Samples are written as they are generated (to a temporary file renamed at the end), so
    memory does not grow with the length of the recording."""
    written = 0
    blocks = iter_decode_codes(
        codec, request.codes, request.speaker_index, request.num_samples, temperature, seed, backend, request.top
    )
    with open_wav_writer(target, codec.sample_rate, force=force) as sink:
        for audio in blocks:
            sink.write(audio)
            written += audio.size
            if on_progress is not None:
                on_progress(written)
    return Decoded(codec.speakers[request.speaker_index], written, codec.sample_rate)


def convert_file(
    codec: Codec,
    source: Path,
    target: Path,
    speaker: str | int,
    force: bool = False,
    temperature: float = 1.0,
    seed: int = 0,
    on_progress: Callable[[int], None] | None = None,
    backend: Backend = "auto",
) -> Decoded:
    """Voice conversion: encode `source` and decode its codes as `speaker` into `target`."""
    check_writable(target, force)
    speaker_index = codec.speaker_index(speaker)
    encoded = encode_chunks(codec.model, iter_audio(source, codec.sample_rate))
    request = DecodeRequest(encoded.codes, speaker_index, encoded.num_samples, encoded.top)
    return decode_file(codec, request, target, force, temperature, seed, on_progress, backend)
