"""Align a reconstruction with its reference before comparing them.

Codecs delay their output (Codec2 by a frame, resamplers by their filter), and a WaveNet decoder
samples its own phase, so a sample-exact waveform match cannot be assumed. The lag is found in two
steps: the cross-correlation of smoothed amplitude envelopes gives a coarse lag that phase does
not disturb; the waveform cross-correlation then refines it within the envelope's resolution.
"""

from __future__ import annotations

import numpy as np


def _xcorr(a: np.ndarray, b: np.ndarray, max_lag: int) -> np.ndarray:
    """c[max_lag + k] = sum_t a[t] * b[t + k] for k in -max_lag..max_lag (FFT based)."""
    size = 1 << int(np.ceil(np.log2(a.size + b.size + 1)))
    spectrum = np.conj(np.fft.rfft(a, size)) * np.fft.rfft(b, size)
    full = np.fft.irfft(spectrum, size)
    return np.concatenate([full[size - max_lag :], full[: max_lag + 1]])


def _envelope(audio: np.ndarray, width: int) -> np.ndarray:
    smooth = np.convolve(np.abs(audio.astype(np.float64)), np.ones(width) / width, mode="same")
    return smooth - smooth.mean()


def estimate_lag(reference: np.ndarray, estimate: np.ndarray, sample_rate: int, max_seconds: float = 0.1) -> int:
    """Samples by which `estimate` lags `reference` (positive: it is late), within ±max_seconds."""
    max_lag = max(1, min(int(max_seconds * sample_rate), reference.size - 1, estimate.size - 1))
    if max_lag < 1 or not np.any(reference) or not np.any(estimate):
        return 0
    width = max(1, int(0.004 * sample_rate))  # 4 ms envelope
    coarse = _xcorr(_envelope(reference, width), _envelope(estimate, width), max_lag)
    centre = int(np.argmax(coarse)) - max_lag
    fine = _xcorr(reference.astype(np.float64), estimate.astype(np.float64), max_lag)
    lo, hi = max(-max_lag, centre - width), min(max_lag, centre + width)
    window = fine[lo + max_lag : hi + max_lag + 1]
    return lo + int(np.argmax(window))


def align(reference: np.ndarray, estimate: np.ndarray, lag: int) -> tuple[np.ndarray, np.ndarray]:
    """Shift `estimate` back by `lag` samples and trim both to the part they share."""
    if lag >= 0:
        estimate = estimate[lag:]
    else:
        reference = reference[-lag:]
    length = min(reference.size, estimate.size)
    return reference[:length], estimate[:length]
