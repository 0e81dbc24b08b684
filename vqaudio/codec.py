"""Turning audio into codes and codes into audio with a trained audio VQ-VAE.

Codes are stored as a plain integer `.npy` (readable with `allow_pickle=False`) plus a JSON
sidecar `CODES.npy.json` that records which model made them and how to turn them back into a
waveform of the original length. A two-level model's codes go in a `.npz` holding `bottom` and
`top` (`np.load(path)["top"]`), with a version-2 sidecar that also describes the top level.
"""

from __future__ import annotations

import json
import math
import zipfile
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
SIDECAR_VERSION = 1  # one level: a .npy of [frames] or [n_q, frames]
SIDECAR_VERSION_LEVELS = 2  # two levels: a .npz of bottom [frames] and top [frames / ratio], sidecar["top"]


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

    @property
    def ratio(self) -> int:
        """Bottom code frames per top code frame (1 for a one-level model)."""
        return self.model.ratio

    @property
    def two_level(self) -> bool:
        return self.model.top is not None

    @property
    def block(self) -> int:
        """Samples per coarsest code frame: encoding pads the audio to a whole number of these."""
        return self.hop * self.ratio

    def frames_for(self, num_samples: int) -> int:
        """Bottom code frames that cover `num_samples` samples."""
        return max(1, -(-num_samples // self.block)) * self.ratio

    def top_bitrate(self) -> float:
        """Bits per second of raw top codes (0 for a one-level model)."""
        if self.model.top_codebook_size is None:
            return 0.0
        return self.sample_rate / self.block * float(np.log2(self.model.top_codebook_size))

    def bitrate(self, n_q: int | None = None) -> float:
        """Bits per second of raw codes from the first `n_q` codebooks (all by default), plus the top level's."""
        return (n_q or self.n_q) * self.sample_rate / self.hop * float(np.log2(self.codebook_size)) + self.top_bitrate()

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


@dataclass
class EncodedAudio:
    """The codes of one recording: bottom [n_q, frames] and, for a two-level model, top [1, frames / ratio]."""

    codes: np.ndarray
    top: np.ndarray | None
    num_samples: int


def encode_audio(codec: Codec, audio: np.ndarray, n_q: int | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Mono float audio at the model rate -> (codes [n_q, frames], top codes [1, frames / ratio] or
    None), padding the end to a whole top frame (a whole frame for a one-level model)."""
    padded = np.zeros(codec.frames_for(audio.size) * codec.hop, dtype=np.float32)
    padded[: audio.size] = audio
    with torch.no_grad():
        codes, top = codec.model.encode_levels(torch.from_numpy(padded)[None].to(codec.device), n_q=n_q)
    bottom = codes[0].cpu().numpy().astype(_codes_dtype(codec.codebook_size))
    if top is None:
        return bottom, None
    return bottom, top[0].cpu().numpy().astype(_codes_dtype(codec.model.top_codebook_size or 2))


def encode_chunks(
    codec: Codec,
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
    unit, ratio = codec.block, codec.ratio  # work in whole top frames ("units")
    ctx = -(-codec.model.context_frames // ratio)
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
        codes, top = encode_audio(codec, segment, n_q)
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


def encode_file(
    codec: Codec,
    source: Path,
    target: Path,
    speaker: str | int | None = None,
    force: bool = False,
    on_progress: Callable[[int], None] | None = None,
    n_q: int | None = None,
) -> dict[str, Any]:
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
    encoded = encode_chunks(codec, iter_audio(source, codec.sample_rate), on_progress=on_progress, n_q=n_q)
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
) -> dict[str, Any]:
    """Write codes [n_q, frames] to `target` (.npy; [frames] for one codebook) and its sidecar; a
    two-level model's bottom codes and `top` codes [1, frames / ratio] go in a .npz."""
    sidecar_path = sidecar_for(target)
    check_codes_suffix(codec, target)
    check_writable(target, force)
    check_writable(sidecar_path, force)
    if (top is None) == codec.two_level:
        raise VQAudioError(f"{target}: top codes must be given exactly for a two-level model")
    n_q = codes.shape[0]
    codes = codes.astype(_codes_dtype(codec.codebook_size))
    if n_q == 1:
        codes = codes[0]
    sidecar = {
        "format": SIDECAR_FORMAT,
        "version": SIDECAR_VERSION if top is None else SIDECAR_VERSION_LEVELS,
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
    if top is not None:
        top_size = codec.model.top_codebook_size or 2
        sidecar["top"] = {"codebook_size": top_size, "hop": codec.block, "frames": int(top.shape[-1])}
        sidecar["ratio"] = codec.ratio
        with atomic_output(target, force=True) as tmp, open(tmp, "wb") as handle:
            np.savez(handle, bottom=codes, top=top[0].astype(_codes_dtype(top_size)))
    else:
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


def _read_npy(handle: Any, size: int, path: Path, what: str = "") -> np.ndarray:
    """Read one .npy from `handle` (`size` bytes) after checking its header against the bytes:
    integer dtype, one or two dimensions, and exactly the bytes the header declares. Nothing is
    unpickled, and a header declaring a huge shape is refused before anything is allocated."""
    where = f"{path}{what}"
    if handle.read(len(NPY_MAGIC)) != NPY_MAGIC:
        problem = "it is empty" if size == 0 else "it does not start with the NumPy magic bytes"
        raise VQAudioError(f"{where}: not a .npy codes file ({problem}); give the file vqaudio encode wrote")
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
        raise VQAudioError(f"{where}: not a readable .npy codes file (damaged header: {detail})") from None
    if dtype.hasobject:
        raise VQAudioError(f"{where}: holds Python objects (pickled data), which vqaudio never loads; give integer codes")
    if not np.issubdtype(dtype, np.integer):
        raise VQAudioError(f"{where}: codes must be integers, found dtype {dtype}")
    count = math.prod(shape)
    if len(shape) not in (1, 2) or count == 0:
        raise VQAudioError(f"{where}: codes must be a non-empty [frames] or [n_q, frames] array, found shape {shape}")
    declared, present = count * dtype.itemsize, size - handle.tell()
    if declared != present:
        problem = "truncated" if present < declared else "longer than its header says"
        raise VQAudioError(
            f"{where}: {problem}: the header declares a {shape} {dtype} array ({declared} bytes) "
            f"but {present} bytes follow; re-encode the audio"
        )
    data = np.frombuffer(handle.read(declared), dtype=dtype, count=count).copy()  # writable, like np.load
    return data.reshape(shape, order="F" if fortran else "C")


def _check_path(path: Path) -> None:
    if not path.exists():
        raise VQAudioError(f"{path}: no such codes file")
    if path.is_dir():
        raise VQAudioError(f"{path}: is a folder; give a codes file written by vqaudio encode")


def _load_codes_array(path: Path) -> np.ndarray:
    """A checked .npy codes array (see `_read_npy`)."""
    _check_path(path)
    with open(path, "rb") as handle:
        return _read_npy(handle, path.stat().st_size, path)


NPZ_MEMBERS = ("bottom.npy", "top.npy")


def _load_codes_levels(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(bottom, top) from a two-level .npz, each member checked like a .npy. Only stored
    (uncompressed) members are read, so a small file cannot expand into a huge allocation."""
    _check_path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            infos = {info.filename: info for info in archive.infolist()}
            if sorted(infos) != sorted(NPZ_MEMBERS):
                raise VQAudioError(f"{path}: a two-level codes file holds exactly 'bottom' and 'top'; found {sorted(infos)}")
            arrays = []
            for name in NPZ_MEMBERS:
                info = infos[name]
                if info.compress_type != zipfile.ZIP_STORED:
                    raise VQAudioError(f"{path}: member {name} is compressed; write codes with vqaudio encode (np.savez)")
                if info.file_size > path.stat().st_size:  # a stored member cannot be larger than its archive
                    raise VQAudioError(f"{path}: member {name} claims {info.file_size} bytes, more than the file holds")
                with archive.open(info) as handle:
                    arrays.append(_read_npy(handle, info.file_size, path, f" ({name})"))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError) as exc:
        raise VQAudioError(f"{path}: not a readable two-level codes file ({str(exc).splitlines()[0][:120]}); re-encode the audio") from None
    bottom, top = arrays
    return bottom, top


def read_codes(path: Path) -> tuple[np.ndarray, dict[str, Any]]:
    """Load a one-level codes file and its sidecar, checking both are well formed."""
    codes, top, sidecar = read_code_levels(path)
    if top is not None:
        raise VQAudioError(f"{path}: holds two-level codes; read it with read_code_levels")
    return codes, sidecar


def read_code_levels(path: Path) -> tuple[np.ndarray, np.ndarray | None, dict[str, Any]]:
    """Load a codes file (.npy, or .npz with two levels) and its sidecar, checking both are well
    formed: (codes [n_q, frames], top codes [1, frames / ratio] or None, sidecar)."""
    top: np.ndarray | None = None
    if path.suffix.lower() == ".npz" and path.is_file() and not zipfile.is_zipfile(path):
        raise VQAudioError(f"{path}: not a two-level codes file (not a .npz archive); give the file vqaudio encode wrote")
    if path.is_file() and zipfile.is_zipfile(path):
        codes, top = _load_codes_levels(path)
        if top.ndim != 1 or codes.ndim != 1:
            raise VQAudioError(f"{path}: two-level codes must be 1-D bottom and top arrays, found {codes.shape} and {top.shape}")
        top = top[None]
    else:
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
    expected_version = SIDECAR_VERSION if top is None else SIDECAR_VERSION_LEVELS
    if sidecar.get("version") not in (SIDECAR_VERSION, SIDECAR_VERSION_LEVELS):
        raise VQAudioError(f"{side}: sidecar version {sidecar.get('version')} is not supported (expected {expected_version})")
    if sidecar["version"] != expected_version:
        levels = "one-level" if top is None else "two-level"
        raise VQAudioError(f"{side}: a version {sidecar['version']} sidecar, but {path} holds {levels} codes; the files do not belong together")
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
    if top is not None:
        described = sidecar.get("top")
        if not isinstance(described, dict) or not all(
            isinstance(described.get(k), int) and not isinstance(described.get(k), bool) for k in ("codebook_size", "hop", "frames")
        ):
            raise VQAudioError(f"{side}: a two-level sidecar needs top.codebook_size, top.hop and top.frames; re-encode the audio")
        if described["frames"] != top.shape[-1]:
            raise VQAudioError(f"{path}: {top.shape[-1]} top frames but the sidecar says {described['frames']}")
    return codes, top, sidecar


def check_compatible(codec: Codec, codes: np.ndarray, sidecar: dict[str, Any], path: Path, top: np.ndarray | None = None) -> None:
    """Refuse codes made by another model, or codes outside the codebook."""
    if (top is not None) != codec.two_level:
        have, need = ("two-level", "one-level") if top is not None else ("one-level", "two-level")
        raise VQAudioError(f"{path}: holds {have} codes but {codec.checkpoint} is a {need} model; decode with the model that encoded them")
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
    expected_frames = codec.frames_for(int(sidecar["num_samples"]))
    if codes.shape[-1] != expected_frames:
        raise VQAudioError(
            f"{path}: {codes.shape[-1]} frames of codes but the sidecar's num_samples needs {expected_frames}; "
            "the files do not belong together"
        )
    if top is not None:
        top_size = codec.model.top_codebook_size or 2
        if sidecar["top"]["codebook_size"] != top_size or sidecar["top"]["hop"] != codec.block:
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
    for block in codec.model.iter_decode(tensor, spk, temperature, generator, backend, top_tensor):
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
        speaker = sidecar.get("speaker") or sidecar.get("speaker_index")
    return DecodeRequest(codes, codec.speaker_index(speaker), int(sidecar["num_samples"]), top)


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
        codec, request.codes, request.speaker_index, request.num_samples, temperature, seed, backend, request.top
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
    encoded = encode_chunks(codec, iter_audio(source, codec.sample_rate))
    request = DecodeRequest(encoded.codes, speaker_index, encoded.num_samples, encoded.top)
    return decode_file(codec, request, target, force, temperature, seed, on_progress, backend)
