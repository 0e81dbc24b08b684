"""Reading any audio file soundfile understands as mono float32 at a given rate, and writing wavs."""

from __future__ import annotations

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
    path = Path(path)
    if not path.exists():
        raise VQAudioError(f"{path}: no such file")
    if path.is_dir():
        raise VQAudioError(f"{path}: is a folder, not an audio file")
    try:
        audio, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise VQAudioError(f"{path}: cannot read it as audio ({detail}); give a wav, flac or ogg file") from exc
    if audio.shape[0] == 0:
        raise VQAudioError(f"{path}: holds no samples; give a non-empty recording")
    if not np.isfinite(audio).all():
        raise VQAudioError(f"{path}: contains NaN or infinite samples; fix or re-export the file")
    mono = audio.mean(axis=1)
    return resample(mono, rate, target_rate)


def write_wav(path: str | Path, audio: np.ndarray, sample_rate: int, force: bool = False) -> None:
    """Write 16-bit PCM through a temporary file; refuse to overwrite without `force`."""
    path = Path(path)
    clipped = np.clip(np.asarray(audio, dtype=np.float32), -1.0, 1.0)
    with atomic_output(path, force=force) as tmp:
        sf.write(str(tmp), clipped, sample_rate, subtype="PCM_16", format="WAV")
