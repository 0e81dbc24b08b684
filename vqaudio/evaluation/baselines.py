"""Classical speech codecs as baselines: Opus (opus-tools) and Codec2, run through their own CLIs.

Each baseline takes mono float audio at any rate and returns its decoded audio at that rate, plus
the size of the bitstream it wrote. The tools are found on PATH (Debian: `apt install opus-tools
codec2`); a missing tool is skipped with a note rather than failing the evaluation.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from vqaudio.audio.io import resample
from vqaudio.errors import VQAudioError

CODEC2_RATE = 8000  # Codec2 takes and gives 8 kHz 16-bit raw PCM


@dataclass
class Transcoded:
    audio: np.ndarray  # decoded, mono float32 at the input rate
    bitstream_bytes: int  # size of what the encoder wrote, container included


@dataclass
class Baseline:
    name: str  # as the table shows it
    key: str  # as --baselines names it
    bitrate: float  # nominal bits per second
    tools: tuple[str, ...]
    run: Callable[[np.ndarray, int, Path], Transcoded]


def _call(args: list[str]) -> None:
    result = subprocess.run(args, check=False, capture_output=True, text=True)
    if result.returncode != 0:
        message = (result.stderr or result.stdout).strip().splitlines()
        raise VQAudioError(f"{args[0]} failed (exit {result.returncode}): {message[-1] if message else 'no message'}")


def _pcm16(audio: np.ndarray) -> np.ndarray:
    return (np.clip(audio, -1.0, 1.0) * 32767.0).round().astype("<i2")


def _opus(kbps: float) -> Callable[[np.ndarray, int, Path], Transcoded]:
    def run(audio: np.ndarray, sample_rate: int, work: Path) -> Transcoded:
        source, coded, decoded = work / "in.wav", work / "coded.opus", work / "out.wav"
        sf.write(source, _pcm16(audio), sample_rate, subtype="PCM_16")
        _call(["opusenc", "--quiet", "--speech", "--bitrate", f"{kbps:g}", str(source), str(coded)])
        _call(["opusdec", "--quiet", "--rate", str(sample_rate), str(coded), str(decoded)])
        out, rate = sf.read(decoded, dtype="float32", always_2d=True)
        return Transcoded(resample(out.mean(axis=1), rate, sample_rate), coded.stat().st_size)

    return run


def _codec2(mode: int) -> Callable[[np.ndarray, int, Path], Transcoded]:
    def run(audio: np.ndarray, sample_rate: int, work: Path) -> Transcoded:
        source, coded, decoded = work / "in.raw", work / "coded.bit", work / "out.raw"
        _pcm16(resample(audio, sample_rate, CODEC2_RATE)).tofile(source)
        _call(["c2enc", str(mode), str(source), str(coded)])
        _call(["c2dec", str(mode), str(coded), str(decoded)])
        out = np.fromfile(decoded, dtype="<i2").astype(np.float32) / 32768.0
        return Transcoded(resample(out, CODEC2_RATE, sample_rate), coded.stat().st_size)

    return run


OPUS, CODEC2 = ("opusenc", "opusdec"), ("c2enc", "c2dec")
BASELINES = [
    Baseline("codec2 1200", "codec2_1200", 1200.0, CODEC2, _codec2(1200)),
    Baseline("codec2 2400", "codec2_2400", 2400.0, CODEC2, _codec2(2400)),
    Baseline("codec2 3200", "codec2_3200", 3200.0, CODEC2, _codec2(3200)),
    Baseline("opus 6 kbps", "opus6", 6000.0, OPUS, _opus(6)),
    Baseline("opus 8 kbps", "opus8", 8000.0, OPUS, _opus(8)),
    Baseline("opus 12 kbps", "opus12", 12000.0, OPUS, _opus(12)),
]


def choose_baselines(spec: str) -> list[Baseline]:
    """`--baselines`: "all", "none", or comma-separated keys (opus6,codec2_2400,...)."""
    text = spec.strip().lower()
    if text == "all":
        return list(BASELINES)
    if text in ("none", ""):
        return []
    keys = {b.key: b for b in BASELINES}
    chosen = []
    for key in (part.strip() for part in text.split(",")):
        if key not in keys:
            raise VQAudioError(f"--baselines {spec!r}: unknown baseline {key!r}; choose from all, none, {', '.join(keys)}")
        chosen.append(keys[key])
    return chosen


def available_baselines(wanted: list[Baseline] | None = None) -> tuple[list[Baseline], list[str]]:
    """The baselines (of `wanted`, all by default) whose tools are on PATH, and a note for each one skipped."""
    found, skipped = [], []
    for baseline in BASELINES if wanted is None else wanted:
        missing = [tool for tool in baseline.tools if shutil.which(tool) is None]
        if missing:
            package = "opus-tools" if "opusenc" in baseline.tools else "codec2"
            skipped.append(f"{baseline.name}: {', '.join(missing)} not on PATH (Debian: apt install {package})")
        else:
            found.append(baseline)
    return found, skipped


def transcode(baseline: Baseline, audio: np.ndarray, sample_rate: int) -> Transcoded:
    """Run one clip through a baseline codec in a scratch folder."""
    with tempfile.TemporaryDirectory(prefix="vqaudio-baseline-") as scratch:
        return baseline.run(audio, sample_rate, Path(scratch))
