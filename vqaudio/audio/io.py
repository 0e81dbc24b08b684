"""Reading any audio file soundfile understands as mono float32 at a given rate, and writing wavs."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import soundfile as sf

from vqaudio.errors import VQAudioError
from vqaudio.fileio import atomic_output

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif")


def resample(audio: np.ndarray, orig_rate: int, target_rate: int) -> np.ndarray:
    """Band-limited resampling with soxr (the library librosa uses), returned as float32."""
    if orig_rate == target_rate:
        return audio.astype(np.float32, copy=False)
    import soxr

    return soxr.resample(audio.astype(np.float32, copy=False), orig_rate, target_rate, quality="HQ").astype(
        np.float32, copy=False
    )


def read_audio(path: str | Path, target_rate: int) -> np.ndarray:
    """Read `path`, mix to mono and resample to `target_rate`; float32 in [-1, 1]."""
    return np.concatenate(list(iter_audio(path, target_rate)))


def expected_samples(path: str | Path, target_rate: int) -> int | None:
    """How many samples `iter_audio` will give (for progress bars); None if the header is unreadable."""
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, TypeError, OSError):
        return None
    return int(round(info.frames * target_rate / info.samplerate))


def _check_wav_complete(path: Path) -> None:
    """Refuse a WAV file cut short: libsndfile would quietly read only the samples that are there.

    Walks the RIFF chunks to the `data` chunk and compares the size its header promises with the
    bytes on disk. Sizes 0 and 0xFFFFFFFF mean "unknown" (written by streaming tools) and pass.
    """
    size = path.stat().st_size
    with open(path, "rb") as handle:
        head = handle.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return  # not a plain RIFF WAV; libsndfile judges it
        offset = 12
        while offset + 8 <= size:
            handle.seek(offset)
            chunk = handle.read(8)
            declared = int.from_bytes(chunk[4:8], "little")
            if chunk[:4] == b"data":
                if declared not in (0, 0xFFFFFFFF) and offset + 8 + declared > size:
                    have = size - offset - 8
                    raise VQAudioError(
                        f"{path}: the WAV file is truncated: its header promises {declared} bytes of audio "
                        f"but only {have} are there; re-export or restore the file"
                    )
                return
            offset += 8 + declared + (declared & 1)  # chunks are padded to an even size


def iter_audio(path: str | Path, target_rate: int, block_seconds: float = 10.0) -> Iterator[np.ndarray]:
    """Read `path` block by block as mono float32 at `target_rate`, in memory that does not grow
    with the file's length. soxr's streaming resampler gives the same samples as its one-shot
    call, so the blocks do not depend on the block size."""
    path = Path(path)
    if not path.exists():
        raise VQAudioError(f"{path}: no such file")
    if path.is_dir():
        raise VQAudioError(f"{path}: is a folder, not an audio file")
    if path.stat().st_size == 0:
        raise VQAudioError(f"{path}: the file is empty (0 bytes); give a recording")
    _check_wav_complete(path)
    try:
        handle = sf.SoundFile(str(path))
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise VQAudioError(f"{path}: cannot read it as audio ({detail}); give a wav, flac or ogg file") from exc
    with handle:
        rate = handle.samplerate
        stream = None
        if rate != target_rate:
            import soxr

            stream = soxr.ResampleStream(rate, target_rate, 1, dtype="float32", quality="HQ")
        seen = 0
        blocksize = max(1024, int(block_seconds * rate))
        try:
            for block in handle.blocks(blocksize=blocksize, dtype="float32", always_2d=True):
                if not np.isfinite(block).all():
                    raise VQAudioError(f"{path}: contains NaN or infinite samples; fix or re-export the file")
                seen += block.shape[0]
                mono = block.mean(axis=1).astype(np.float32)
                yield stream.resample_chunk(mono, last=False) if stream is not None else mono
        except (sf.LibsndfileError, RuntimeError) as exc:
            raise VQAudioError(
                f"{path}: the audio data is damaged after {seen} samples ({exc}); re-export or restore the file"
            ) from exc
        if seen == 0:
            raise VQAudioError(f"{path}: holds no samples; give a non-empty recording")
        if stream is not None:
            yield stream.resample_chunk(np.zeros(0, dtype=np.float32), last=True)


class _WavSink:
    def __init__(self, handle: sf.SoundFile) -> None:
        self._handle = handle

    def write(self, audio: np.ndarray) -> None:
        self._handle.write(np.clip(np.asarray(audio, dtype=np.float32), -1.0, 1.0))


@contextlib.contextmanager
def open_wav_writer(path: str | Path, sample_rate: int, force: bool = False) -> Iterator[_WavSink]:
    """A 16-bit mono wav written block by block into a temporary file, renamed into place when
    the block ends without error (an interrupted decode leaves no partial output)."""
    with atomic_output(Path(path), force=force) as tmp:
        with sf.SoundFile(str(tmp), "w", samplerate=sample_rate, channels=1, subtype="PCM_16", format="WAV") as handle:
            yield _WavSink(handle)


def write_wav(path: str | Path, audio: np.ndarray, sample_rate: int, force: bool = False) -> None:
    """Write 16-bit PCM through a temporary file; refuse to overwrite without `force`."""
    path = Path(path)
    clipped = np.clip(np.asarray(audio, dtype=np.float32), -1.0, 1.0)
    with atomic_output(path, force=force) as tmp:
        sf.write(str(tmp), clipped, sample_rate, subtype="PCM_16", format="WAV")
