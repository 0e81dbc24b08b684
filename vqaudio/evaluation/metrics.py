"""Objective audio metrics: SI-SNR, multi-resolution STFT distance, log-mel distance, PESQ, STOI.

All take a reference and a degraded signal (mono float, same sample rate, already aligned; see
`alignment.py`). SI-SNR and the spectral distances are computed here in NumPy; PESQ (ITU-T P.862.2
wide band) and STOI come from the optional `eval` extra (`pesq`, `pystoi`) and return None when
that package is missing, so callers can say which metrics were skipped.
"""

from __future__ import annotations

import importlib.util
import warnings
from functools import lru_cache

import numpy as np

from vqaudio.audio.io import resample

EPS = 1e-5
PESQ_RATE = 16000  # P.862.2 wide band is defined at 16 kHz


def si_snr(reference: np.ndarray, estimate: np.ndarray) -> float:
    """Scale-invariant signal-to-noise ratio in dB (higher is better).

    Both signals are made zero-mean; the estimate is projected on the reference, and the
    energy of that projection is compared with the energy of what is left over."""
    ref = reference.astype(np.float64) - reference.mean()
    est = estimate.astype(np.float64) - estimate.mean()
    scale = np.dot(est, ref) / max(np.dot(ref, ref), 1e-12)
    target = scale * ref
    noise = est - target
    return float(10 * np.log10((np.dot(target, target) + 1e-12) / (np.dot(noise, noise) + 1e-12)))


def _frames(audio: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """Hann-windowed frames [n_frames, n_fft], the signal zero-padded by n_fft/2 on both sides."""
    padded = np.pad(audio.astype(np.float64), n_fft // 2)
    if padded.size < n_fft:
        padded = np.pad(padded, (0, n_fft - padded.size))
    count = 1 + (padded.size - n_fft) // hop
    view = np.lib.stride_tricks.as_strided(
        padded, shape=(count, n_fft), strides=(padded.strides[0] * hop, padded.strides[0]), writeable=False
    )
    return view * np.hanning(n_fft + 1)[:-1]


def magnitude(audio: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """|STFT| as [n_frames, n_fft/2 + 1]."""
    return np.abs(np.fft.rfft(_frames(audio, n_fft, hop), axis=-1))


def stft_resolutions(sample_rate: int) -> list[tuple[int, int]]:
    """(n_fft, hop) for windows of about 32, 64 and 128 ms with 75% overlap, at any sample rate."""
    out = []
    for seconds in (0.032, 0.064, 0.128):
        n_fft = 1 << int(round(np.log2(sample_rate * seconds)))
        out.append((n_fft, n_fft // 4))
    return out


def stft_distance(reference: np.ndarray, estimate: np.ndarray, sample_rate: int) -> float:
    """Multi-resolution STFT distance (lower is better), as in Parallel WaveGAN and DAC.

    Mean over three resolutions of spectral convergence ||S| - |Ŝ||_F / |S|_F plus the mean
    absolute difference of log magnitudes."""
    total = 0.0
    resolutions = stft_resolutions(sample_rate)
    for n_fft, hop in resolutions:
        ref, est = magnitude(reference, n_fft, hop), magnitude(estimate, n_fft, hop)
        convergence = np.linalg.norm(ref - est) / max(np.linalg.norm(ref), 1e-12)
        log_distance = np.mean(np.abs(np.log(ref + EPS) - np.log(est + EPS)))
        total += convergence + log_distance
    return float(total / len(resolutions))


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + hz / 700.0)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


@lru_cache(maxsize=8)
def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int) -> np.ndarray:
    """Triangular filters [n_mels, n_fft/2 + 1] equally spaced on the HTK mel scale, 0 Hz to Nyquist,
    each normalised to unit area so that bands of different widths weigh the same."""
    bins = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    edges = _mel_to_hz(np.linspace(0.0, _hz_to_mel(np.array(sample_rate / 2.0)), n_mels + 2))
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bins[None] - lower) / (centre - lower)
    falling = (upper - bins[None]) / (upper - centre)
    filters = np.clip(np.minimum(rising, falling), 0.0, None)
    area = filters.sum(axis=1, keepdims=True)
    return filters / np.where(area > 0, area, 1.0)


def log_mel_distance(reference: np.ndarray, estimate: np.ndarray, sample_rate: int, n_mels: int = 80) -> float:
    """Mean absolute difference of natural-log mel power spectra (64 ms windows, 16 ms hop)."""
    n_fft = 1 << int(round(np.log2(sample_rate * 0.064)))
    bank = mel_filterbank(sample_rate, n_fft, n_mels)
    ref = np.log(magnitude(reference, n_fft, n_fft // 4) ** 2 @ bank.T + EPS)
    est = np.log(magnitude(estimate, n_fft, n_fft // 4) ** 2 @ bank.T + EPS)
    return float(np.mean(np.abs(ref - est)))


def optional_metrics_missing() -> dict[str, str]:
    """The metrics whose package is not installed, each with the reason, e.g. {'pesq_wb': ...}."""
    missing = {}
    for metric, package in (("pesq_wb", "pesq"), ("stoi", "pystoi")):
        if importlib.util.find_spec(package) is None:
            missing[metric] = f"the {package!r} package is not installed (pip install 'vqaudio[eval]')"
    return missing


def pesq_wb(reference: np.ndarray, estimate: np.ndarray, sample_rate: int) -> float | None:
    """Wide-band PESQ MOS-LQO (1.0 to about 4.64; higher is better), at 16 kHz.

    Other rates are resampled to 16 kHz first. None when the package is missing or PESQ finds
    no speech in the reference (silence)."""
    try:
        from pesq import PesqError, pesq
    except ImportError:
        return None
    if not np.any(reference) or not np.any(estimate):
        return None  # PESQ is undefined on silence
    if sample_rate != PESQ_RATE:
        reference, estimate = resample(reference, sample_rate, PESQ_RATE), resample(estimate, sample_rate, PESQ_RATE)
    try:
        return float(pesq(PESQ_RATE, reference.astype(np.float64), estimate.astype(np.float64), "wb"))
    except PesqError:  # no utterance found (silence) or a buffer too short
        return None


def stoi(reference: np.ndarray, estimate: np.ndarray, sample_rate: int) -> float | None:
    """Short-time objective intelligibility (0 to 1; higher is better).

    None when pystoi is missing or the clip holds too little speech for STOI's 384 ms segments."""
    try:
        from pystoi import stoi as pystoi_stoi
    except ImportError:
        return None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        score = float(pystoi_stoi(reference.astype(np.float64), estimate.astype(np.float64), sample_rate, extended=False))
    if any("Not enough STFT frames" in str(w.message) for w in caught):
        return None  # under about 0.4 s of speech: pystoi returns a placeholder, not a score
    return score


SIGNAL_METRICS = ("si_snr", "stft_distance", "log_mel_distance", "pesq_wb", "stoi")


def all_metrics(
    reference: np.ndarray, estimate: np.ndarray, sample_rate: int, which: tuple[str, ...] | list[str] = SIGNAL_METRICS
) -> dict[str, float | None]:
    """The metrics `which` (all of this module's by default) for one aligned pair; None for a
    metric that could not be computed."""
    compute = {
        "si_snr": lambda: si_snr(reference, estimate),
        "stft_distance": lambda: stft_distance(reference, estimate, sample_rate),
        "log_mel_distance": lambda: log_mel_distance(reference, estimate, sample_rate),
        "pesq_wb": lambda: pesq_wb(reference, estimate, sample_rate),
        "stoi": lambda: stoi(reference, estimate, sample_rate),
    }
    return {name: compute[name]() for name in which}
