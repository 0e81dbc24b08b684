"""The embedded demo corpus: synthetic 'speakers' saying sequences of speech-like segments.

No download, fully deterministic. Speakers differ in pitch range and vocal-tract length
(formants scale together), which is what a speaker embedding should learn to carry. Each
utterance strings together voiced vowels (a glottal pulse train through formant resonators),
fricatives (band-passed noise), plosives (closure then burst) and pauses.
"""

from __future__ import annotations

import numpy as np
from scipy.signal import butter, lfilter

# Formant frequencies (Hz) and bandwidths of five vowels for an adult male-size vocal tract.
VOWELS = {
    "a": (730, 1090, 2440),
    "e": (530, 1840, 2480),
    "i": (270, 2290, 3010),
    "o": (570, 840, 2410),
    "u": (300, 870, 2240),
}
BANDWIDTHS = (80.0, 100.0, 140.0)
# Utterance numbers from here on are never part of a demo recipe's training corpus.
HELDOUT_UTTERANCE_BASE = 1_000_000
# Fricative noise bands (Hz): /s/, /sh/, /f/.
FRICATIVES = {"s": (4000, 7500), "sh": (2000, 5000), "f": (1200, 7000)}


def speaker_traits(index: int) -> dict[str, float]:
    """Pitch range and formant scale of demo speaker `index` (0 = low male-like voice, upwards)."""
    rng = np.random.default_rng([7, index])
    base_f0 = 90.0 * (1.35 ** (index % 6)) * rng.uniform(0.95, 1.05)
    return {
        "f0_low": base_f0,
        "f0_high": base_f0 * rng.uniform(1.4, 1.8),
        "formant_scale": 1.0 + 0.09 * (index % 6) + rng.uniform(-0.02, 0.02),
        "breathiness": rng.uniform(0.01, 0.05),
    }


def _resonator(signal: np.ndarray, freq: float, bandwidth: float, rate: int) -> np.ndarray:
    """Second-order all-pole resonance at `freq` (unity gain at DC)."""
    r = np.exp(-np.pi * bandwidth / rate)
    theta = 2 * np.pi * freq / rate
    a = [1.0, -2 * r * np.cos(theta), r * r]
    return lfilter([sum(a)], a, signal)


def _envelope(n: int, rate: int, attack: float = 0.01, release: float = 0.02) -> np.ndarray:
    env = np.ones(n)
    a, r = min(n // 2, int(attack * rate)), min(n // 2, int(release * rate))
    if a:
        env[:a] = np.linspace(0, 1, a)
    if r:
        env[n - r :] = np.linspace(1, 0, r)
    return env


def _vowel(rng: np.random.Generator, traits: dict[str, float], rate: int) -> np.ndarray:
    n = int(rng.uniform(0.08, 0.25) * rate)
    f_start, f_end = rng.uniform(traits["f0_low"], traits["f0_high"], size=2)
    f0 = np.linspace(f_start, f_end, n) * (1 + 0.01 * rng.standard_normal(n).cumsum() / np.sqrt(n))
    phase = np.cumsum(f0 / rate)
    pulses = np.diff(np.floor(phase), prepend=0.0)
    source = lfilter([1.0], [1.0, -0.97], pulses) - lfilter([1.0], [1.0, -0.97], pulses).mean()
    source += traits["breathiness"] * rng.standard_normal(n)
    formants = VOWELS[rng.choice(list(VOWELS))]
    out = np.zeros(n)
    for freq, bw in zip(formants, BANDWIDTHS):
        f = min(freq * traits["formant_scale"], 0.45 * rate)
        out += _resonator(source, f, bw, rate)
    out /= np.abs(out).max() + 1e-9
    return out * _envelope(n, rate) * rng.uniform(0.5, 0.9)


def _fricative(rng: np.random.Generator, rate: int) -> np.ndarray:
    n = int(rng.uniform(0.06, 0.15) * rate)
    low, high = FRICATIVES[rng.choice(list(FRICATIVES))]
    high = min(high, 0.45 * rate)
    low = min(low, 0.5 * high)  # at low sample rates the band slides down below Nyquist
    b, a = butter(4, [low / (rate / 2), high / (rate / 2)], btype="band")
    noise = lfilter(b, a, rng.standard_normal(n))
    noise /= np.abs(noise).max() + 1e-9
    return noise * _envelope(n, rate, 0.02, 0.02) * rng.uniform(0.1, 0.3)


def _plosive(rng: np.random.Generator, rate: int) -> np.ndarray:
    closure = np.zeros(int(rng.uniform(0.03, 0.06) * rate))
    burst_len = int(rng.uniform(0.01, 0.02) * rate)
    burst = rng.standard_normal(burst_len) * np.exp(-np.linspace(0, 6, burst_len))
    return np.concatenate([closure, burst * rng.uniform(0.2, 0.5)])


def synthesize_utterance(speaker: int, utterance: int, seconds: float, rate: int = 16000, seed: int = 1234) -> np.ndarray:
    """One deterministic utterance of demo speaker `speaker`, float32 of exactly `seconds` * rate samples."""
    rng = np.random.default_rng([seed, speaker, utterance])
    traits = speaker_traits(speaker)
    total = int(seconds * rate)
    pieces: list[np.ndarray] = [np.zeros(int(rng.uniform(0.02, 0.1) * rate))]
    length = pieces[0].size
    while length < total:
        kind = rng.choice(["vowel", "vowel", "vowel", "fricative", "plosive", "pause"])
        if kind == "vowel":
            piece = _vowel(rng, traits, rate)
        elif kind == "fricative":
            piece = _fricative(rng, rate)
        elif kind == "plosive":
            piece = np.concatenate([_plosive(rng, rate), _vowel(rng, traits, rate)])
        else:
            piece = np.zeros(int(rng.uniform(0.05, 0.2) * rate))
        pieces.append(piece)
        length += piece.size
    audio = np.concatenate(pieces)[:total]
    audio += 1e-3 * rng.standard_normal(total)  # a recording's noise floor
    return (0.7 * audio / (np.abs(audio).max() + 1e-9)).astype(np.float32)


def speaker_name(index: int) -> str:
    return f"demo{index}"
