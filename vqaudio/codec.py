"""Turning audio into codes and codes into audio with a trained audio VQ-VAE.

Codes are stored as a plain integer `.npy` (readable with `allow_pickle=False`) plus a JSON
sidecar `CODES.npy.json` that records which model made them and how to turn them back into a
waveform of the original length.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vqaudio.audio.io import iter_audio, open_wav_writer
from vqaudio.errors import VQAudioError
from vqaudio.fileio import atomic_output, check_writable
from vqaudio.generation.engine import Backend
from vqaudio.models.audio_vqvae import AudioVQVAE
from vqaudio.recipe import validate_recipe
from vqaudio.train.checkpoint import load_checkpoint

SIDECAR_FORMAT = "vqaudio-codes"
SIDECAR_VERSION = 1


@dataclass
class Codec:
    """A trained audio VQ-VAE with what is needed to use it as a codec."""

    model: AudioVQVAE
    checkpoint: Path
    fingerprint: str
    step: int
    sample_rate: int
    speakers: list[str]
    recipe: dict[str, Any]
    device: torch.device

    @property
    def hop(self) -> int:
        return self.model.hop

    @property
    def codebook_size(self) -> int:
        return self.model.codebook_size

    @property
    def n_q(self) -> int:
        return self.model.n_q

    def bitrate(self, n_q: int | None = None) -> float:
        """Bits per second of raw codes from the first `n_q` codebooks (all by default)."""
        return (n_q or self.n_q) * self.sample_rate / self.hop * float(np.log2(self.codebook_size))

    def check_n_q(self, n_q: int | None) -> int:
        if n_q is None:
            return self.n_q
        if not 1 <= n_q <= self.n_q:
            raise VQAudioError(f"--n-q {n_q}: this model has {self.n_q} codebook(s); choose 1..{self.n_q}")
        return n_q

    def speaker_index(self, speaker: str | int | None) -> int:
        """Accept an index ('3', 3) or a name ('p225'); None means speaker 0."""
        if speaker is None:
            return 0
        text = str(speaker)
        if text in self.speakers:
            return self.speakers.index(text)
        if text.lstrip("-").isdigit():
            index = int(text)
            if 0 <= index < len(self.speakers):
                return index
            raise VQAudioError(f"--speaker {index}: out of range; this model has speakers 0..{len(self.speakers) - 1}")
        shown = ", ".join(self.speakers[:12]) + (" ..." if len(self.speakers) > 12 else "")
        raise VQAudioError(f"--speaker {text!r}: not a speaker of this model (it knows {shown})")


def load_codec(checkpoint: str | Path, device: torch.device) -> Codec:
    """Rebuild the model from a checkpoint's own recipe and weights."""
    payload = load_checkpoint(checkpoint)
    if payload.get("kind") != "audio_vqvae":
        raise VQAudioError(f"{checkpoint}: holds a {payload.get('kind')} model, not an audio VQ-VAE")
    missing = [k for k in ("recipe", "metadata", "model", "fingerprint", "step") if k not in payload]
    meta = payload.get("metadata") or {}
    missing += [f"metadata.{k}" for k in ("speakers", "sample_rate") if k not in meta]
    if missing:
        raise VQAudioError(f"{checkpoint}: incomplete checkpoint (no {', '.join(missing)})")
    recipe = validate_recipe(payload["recipe"], f"{checkpoint} (embedded recipe)")
    model = AudioVQVAE(recipe.model, num_speakers=len(meta["speakers"]))
    try:
        model.load_state_dict(payload["model"])
    except RuntimeError as exc:
        raise VQAudioError(f"{checkpoint}: weights do not fit the recipe stored with them ({str(exc).splitlines()[0]})") from None
    model.to(device).eval()
    return Codec(
        model=model,
        checkpoint=Path(checkpoint),
        fingerprint=payload["fingerprint"],
        step=int(payload["step"]),
        sample_rate=int(meta["sample_rate"]),
        speakers=list(meta["speakers"]),
        recipe=payload["recipe"],
        device=device,
    )


def _codes_dtype(codebook_size: int) -> type:
    return np.int16 if codebook_size <= 32768 else np.int32


def encode_audio(codec: Codec, audio: np.ndarray, n_q: int | None = None) -> np.ndarray:
    """Mono float audio at the model rate -> codes [n_q, frames], padding the end to a whole frame."""
    frames = max(1, -(-audio.size // codec.hop))
    padded = np.zeros(frames * codec.hop, dtype=np.float32)
    padded[: audio.size] = audio
    with torch.no_grad():
        codes = codec.model.encode(torch.from_numpy(padded)[None].to(codec.device), n_q=n_q)
    return codes[0].cpu().numpy().astype(_codes_dtype(codec.codebook_size))


def encode_chunks(
    codec: Codec,
    blocks: Iterable[np.ndarray],
    chunk_frames: int = 2048,
    on_progress: Callable[[int], None] | None = None,
    n_q: int | None = None,
) -> tuple[np.ndarray, int]:
    """Encode audio that arrives in blocks (mono float32 at the model rate) in bounded memory.

    The encoder runs on chunks of `chunk_frames` latent frames, each widened by the encoder's
    context on both sides, and keeps only the chunk's own frames: the codes equal those of
    `encode_audio` on the whole signal. Returns (codes, number of samples seen).
    """
    hop, ctx = codec.hop, codec.model.encoder.context_frames
    pending = np.zeros(0, dtype=np.float32)  # samples from absolute index `offset` on
    offset = 0
    total = 0
    done = 0  # frames encoded so far
    pieces: list[np.ndarray] = []

    def encode_frames(first: int, last: int, final: bool) -> None:
        lo = max(0, first - ctx)
        hi = last + ctx
        if final:
            hi = min(hi, -(-total // hop))
        segment = np.zeros((hi - lo) * hop, dtype=np.float32)
        piece = pending[lo * hop - offset : hi * hop - offset]
        segment[: piece.size] = piece
        pieces.append(encode_audio(codec, segment, n_q)[:, first - lo : last - lo])

    for block in blocks:
        pending = np.concatenate([pending, block.astype(np.float32, copy=False)])
        total += block.size
        while (total // hop) - ctx >= done + chunk_frames:
            encode_frames(done, done + chunk_frames, final=False)
            done += chunk_frames
            keep_from = (done - ctx) * hop  # the next chunk's left context starts here
            pending = pending[keep_from - offset :]
            offset = keep_from
            if on_progress is not None:
                on_progress(done * hop)
    if total == 0:
        raise VQAudioError("no audio samples to encode")
    frames = -(-total // hop)
    while done < frames:
        last = min(frames, done + chunk_frames)
        encode_frames(done, last, final=True)
        done = last
    if on_progress is not None:
        on_progress(total)
    return np.concatenate(pieces, axis=1), total


def encode_file(
    codec: Codec,
    source: Path,
    target: Path,
    speaker: str | int | None = None,
    force: bool = False,
    on_progress: Callable[[int], None] | None = None,
    n_q: int | None = None,
) -> dict[str, Any]:
    """Encode `source` to `target` (.npy) and its sidecar, streaming the audio; returns the sidecar.

    The file holds [frames] codes for one codebook, [n_q, frames] for several."""
    check_writable(target, force)
    check_writable(sidecar_for(target), force)
    if speaker is None:
        speaker = guess_speaker(source, codec.speakers)
    speaker_index = codec.speaker_index(speaker) if speaker is not None else None
    n_q = codec.check_n_q(n_q)
    codes, num_samples = encode_chunks(codec, iter_audio(source, codec.sample_rate), on_progress=on_progress, n_q=n_q)
    return write_codes(codec, codes, target, speaker_index, num_samples, str(source), force)


def write_codes(
    codec: Codec,
    codes: np.ndarray,
    target: Path,
    speaker_index: int | None,
    num_samples: int,
    source: str,
    force: bool = False,
) -> dict[str, Any]:
    """Write codes [n_q, frames] to `target` (.npy; [frames] for one codebook) and its sidecar."""
    sidecar_path = sidecar_for(target)
    check_writable(target, force)
    check_writable(sidecar_path, force)
    n_q = codes.shape[0]
    codes = codes.astype(_codes_dtype(codec.codebook_size))
    if n_q == 1:
        codes = codes[0]
    sidecar = {
        "format": SIDECAR_FORMAT,
        "version": SIDECAR_VERSION,
        "fingerprint": codec.fingerprint,
        "sample_rate": codec.sample_rate,
        "hop": codec.hop,
        "codebook_size": codec.codebook_size,
        "n_q": n_q,
        "bitrate": codec.bitrate(n_q),
        "speaker": codec.speakers[speaker_index] if speaker_index is not None else None,
        "speaker_index": speaker_index,
        "num_samples": int(num_samples),
        "shape": list(codes.shape),
        "source": source,
    }
    with atomic_output(target, force=True) as tmp, open(tmp, "wb") as handle:
        np.save(handle, codes, allow_pickle=False)
    with atomic_output(sidecar_path, force=True) as tmp:
        tmp.write_text(json.dumps(sidecar, indent=2) + "\n")
    return sidecar


def guess_speaker(source: Path, speakers: list[str]) -> str | None:
    """A known speaker named by the file's folder (`p225/x.wav`) or name prefix (`p225_003.wav`)."""
    for candidate in (source.parent.name, source.stem.split("_")[0]):
        if candidate in speakers:
            return candidate
    return None


def sidecar_for(codes_path: Path) -> Path:
    return codes_path.with_name(codes_path.name + ".json")


NPY_MAGIC = b"\x93NUMPY"


def _load_codes_array(path: Path) -> np.ndarray:
    """Read a .npy codes array after checking its header against the file: integer dtype, one or
    two dimensions, and exactly the bytes the header declares. Nothing is unpickled, and a header
    declaring a huge shape is refused before anything is allocated."""
    if not path.exists():
        raise VQAudioError(f"{path}: no such codes file")
    if path.is_dir():
        raise VQAudioError(f"{path}: is a folder; give a .npy codes file")
    size = path.stat().st_size
    with open(path, "rb") as handle:
        if handle.read(len(NPY_MAGIC)) != NPY_MAGIC:
            what = "it is empty" if size == 0 else "it does not start with the NumPy magic bytes"
            raise VQAudioError(f"{path}: not a .npy codes file ({what}); give the file vqaudio encode wrote")
        handle.seek(0)
        try:
            version = np.lib.format.read_magic(handle)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(handle)
            elif version == (2, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(handle)
            else:
                raise ValueError(f".npy format version {version[0]}.{version[1]} is not supported")
        except Exception as exc:  # numpy parses the header with Python's tokenizer: any failure means damage
            detail = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
            raise VQAudioError(f"{path}: not a readable .npy codes file (damaged header: {detail})") from None
        if dtype.hasobject:
            raise VQAudioError(f"{path}: holds Python objects (pickled data), which vqaudio never loads; give integer codes")
        if not np.issubdtype(dtype, np.integer):
            raise VQAudioError(f"{path}: codes must be integers, found dtype {dtype}")
        count = math.prod(shape)
        if len(shape) not in (1, 2) or count == 0:
            raise VQAudioError(f"{path}: codes must be a non-empty [frames] or [n_q, frames] array, found shape {shape}")
        declared, present = count * dtype.itemsize, size - handle.tell()
        if declared != present:
            problem = "truncated" if present < declared else "longer than its header says"
            raise VQAudioError(
                f"{path}: {problem}: the header declares a {shape} {dtype} array ({declared} bytes) "
                f"but {present} bytes follow; re-encode the audio"
            )
        data = np.fromfile(handle, dtype=dtype, count=count)
    return data.reshape(shape, order="F" if fortran else "C")


def read_codes(path: Path) -> tuple[np.ndarray, dict[str, Any]]:
    """Load a codes file and its sidecar, checking both are well formed."""
    codes = _load_codes_array(path)
    side = sidecar_for(path)
    if not side.exists():
        raise VQAudioError(f"{side}: missing; the codes file needs the sidecar vqaudio encode wrote beside it")
    try:
        sidecar = json.loads(side.read_text())
    except (ValueError, OSError) as exc:
        raise VQAudioError(f"{side}: not valid JSON ({exc})") from None
    if not isinstance(sidecar, dict) or sidecar.get("format") != SIDECAR_FORMAT:
        raise VQAudioError(f"{side}: not a vqaudio codes sidecar")
    if sidecar.get("version") != SIDECAR_VERSION:
        raise VQAudioError(f"{side}: sidecar version {sidecar.get('version')} is not supported (expected {SIDECAR_VERSION})")
    needed = {"fingerprint": str, "sample_rate": int, "hop": int, "codebook_size": int, "num_samples": int}
    missing = [k for k in needed if k not in sidecar]
    if missing:
        raise VQAudioError(f"{side}: missing {', '.join(missing)}; re-encode the audio with vqaudio encode")
    wrong = [k for k, kind in needed.items() if not isinstance(sidecar[k], kind) or isinstance(sidecar[k], bool)]
    if wrong:
        raise VQAudioError(f"{side}: {', '.join(wrong)} has the wrong type; re-encode the audio with vqaudio encode")
    if sidecar["num_samples"] < 1:
        raise VQAudioError(f"{side}: num_samples must be positive")
    codes = codes.reshape(-1, codes.shape[-1])  # always [n_q, frames] from here on
    if sidecar.get("n_q", 1) != codes.shape[0]:
        raise VQAudioError(f"{path}: holds {codes.shape[0]} codebook(s) but the sidecar says n_q = {sidecar.get('n_q', 1)}")
    return codes, sidecar


def check_compatible(codec: Codec, codes: np.ndarray, sidecar: dict[str, Any], path: Path) -> None:
    """Refuse codes made by another model, or codes outside the codebook."""
    if sidecar["codebook_size"] != codec.codebook_size:
        raise VQAudioError(
            f"{path}: codes are for a codebook of {sidecar['codebook_size']}, "
            f"but {codec.checkpoint} has K = {codec.codebook_size}; decode with the model that encoded them"
        )
    if sidecar["fingerprint"] != codec.fingerprint:
        raise VQAudioError(
            f"{path}: made by model {sidecar['fingerprint']}, but {codec.checkpoint} is model {codec.fingerprint}; "
            "pass -c with the checkpoint that encoded them"
        )
    if sidecar["hop"] != codec.hop or sidecar["sample_rate"] != codec.sample_rate:
        raise VQAudioError(f"{path}: sidecar hop/sample rate do not match {codec.checkpoint}")
    if codes.shape[0] > codec.n_q:
        raise VQAudioError(f"{path}: {codes.shape[0]} codebooks, but {codec.checkpoint} has {codec.n_q}")
    if codes.min() < 0 or codes.max() >= codec.codebook_size:
        raise VQAudioError(f"{path}: codes must lie in 0..{codec.codebook_size - 1}, found {codes.min()}..{codes.max()}")
    expected_frames = max(1, -(-int(sidecar["num_samples"]) // codec.hop))
    if codes.shape[-1] != expected_frames:
        raise VQAudioError(
            f"{path}: {codes.shape[-1]} frames of codes but the sidecar's num_samples needs {expected_frames}; "
            "the files do not belong together"
        )


def iter_decode_codes(
    codec: Codec,
    codes: np.ndarray,
    speaker: int,
    num_samples: int | None = None,
    temperature: float = 1.0,
    seed: int = 0,
    backend: Backend = "auto",
) -> Iterator[np.ndarray]:
    """Codes [frames] or [n_q, frames] -> successive float32 audio blocks, stopping at `num_samples`."""
    generator = torch.Generator(device=codec.device).manual_seed(seed)
    tensor = torch.as_tensor(codes.astype(np.int64)).reshape(1, -1, codes.shape[-1]).to(codec.device)
    spk = torch.tensor([speaker], device=codec.device)
    produced = 0
    for block in codec.model.iter_decode(tensor, spk, temperature, generator, backend):
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
) -> np.ndarray:
    """Codes [frames] or [n_q, frames] -> float32 audio, trimmed to `num_samples` when given."""
    return np.concatenate(list(iter_decode_codes(codec, codes, speaker, num_samples, temperature, seed, backend)))


@dataclass
class DecodeRequest:
    """Codes checked against the model, with the speaker and length to decode them at."""

    codes: np.ndarray
    speaker_index: int
    num_samples: int


def open_codes(codec: Codec, source: Path, target: Path, speaker: str | int | None = None, force: bool = False) -> DecodeRequest:
    """Every check before decoding starts: the output may be written, the codes fit this model."""
    check_writable(target, force)
    codes, sidecar = read_codes(source)
    check_compatible(codec, codes, sidecar, source)
    if speaker is None:
        speaker = sidecar.get("speaker") or sidecar.get("speaker_index")
    return DecodeRequest(codes, codec.speaker_index(speaker), int(sidecar["num_samples"]))


def decode_file(
    codec: Codec,
    request: DecodeRequest,
    target: Path,
    force: bool = False,
    temperature: float = 1.0,
    seed: int = 0,
    on_progress: Callable[[int], None] | None = None,
    backend: Backend = "auto",
) -> dict[str, Any]:
    """Decode checked codes into a wav at the model's rate with the original length.

    Samples are written as they are generated (to a temporary file renamed at the end), so
    memory does not grow with the length of the recording."""
    written = 0
    blocks = iter_decode_codes(
        codec, request.codes, request.speaker_index, request.num_samples, temperature, seed, backend
    )
    with open_wav_writer(target, codec.sample_rate, force=force) as sink:
        for audio in blocks:
            sink.write(audio)
            written += audio.size
            if on_progress is not None:
                on_progress(written)
    return {"speaker": codec.speakers[request.speaker_index], "num_samples": written, "sample_rate": codec.sample_rate}


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
) -> dict[str, Any]:
    """Voice conversion: encode `source` and decode its codes as `speaker` into `target`."""
    check_writable(target, force)
    speaker_index = codec.speaker_index(speaker)
    codes, num_samples = encode_chunks(codec, iter_audio(source, codec.sample_rate))
    request = DecodeRequest(codes, speaker_index, num_samples)
    return decode_file(codec, request, target, force, temperature, seed, on_progress, backend)
