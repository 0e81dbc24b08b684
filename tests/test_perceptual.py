"""The metrics made for generative codecs, on cases whose ordering is known: identical signals
score best, added noise lower, white noise lowest; a real speaker is closer to themself than to
another real speaker."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import soundfile as sf

from vqaudio.errors import VQAudioError
from vqaudio.evaluation import perceptual
from vqaudio.evaluation.evaluate import DNSMOS, METRICS, choose_metrics


def _needs(module: str) -> None:
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed (pip install 'vqaudio[eval]')")


@pytest.fixture(scope="module")
def speech() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A synthetic utterance (voiced, with formants), the same with noise at about 10 dB SNR,
    and white noise of the same level."""
    from vqaudio.data.demo import synthesize_utterance

    clean = synthesize_utterance(1, 3, 3.0, 16000).astype(np.float32)
    rng = np.random.default_rng(0)
    level = float(np.sqrt(np.mean(clean**2)))
    noisy = np.clip(clean + 0.3 * level * rng.standard_normal(clean.size), -1, 1).astype(np.float32)
    white = np.clip(level * rng.standard_normal(clean.size), -1, 1).astype(np.float32)
    return clean, noisy, white


def test_visqol_ranks_identical_above_noisy_above_white_noise(speech):
    _needs("visqol")
    clean, noisy, white = speech
    same, degraded, worst = (perceptual.visqol(clean, x, 16000) for x in (clean, noisy, white))
    assert same > degraded > worst
    assert same > 4.0 and worst < 1.5
    assert perceptual.visqol(clean[::2], clean[::2], 8000) > 4.0  # other rates are resampled to 16 kHz


def test_warpq_ranks_identical_below_noisy_below_white_noise(speech):
    _needs("warpq")
    clean, noisy, white = speech
    same, degraded, worst = (perceptual.warpq(clean, x, 16000) for x in (clean, noisy, white))
    assert same < degraded < worst  # a distance: lower is better


def test_dnsmos_scores_the_clean_recording_above_the_noisy_and_white_noise(speech):
    _needs("speechmos")
    clean, noisy, white = speech
    scores = [perceptual.dnsmos(x, 16000) for x in (clean, noisy, white)]
    assert scores[0]["bak"] > scores[1]["bak"] > scores[2]["bak"]  # background noise
    assert scores[0]["ovrl"] > scores[2]["ovrl"] and scores[0]["sig"] > scores[2]["sig"]
    assert perceptual.dnsmos(np.zeros(16000, dtype=np.float32), 16000) is None  # silence is not scored


def test_a_real_speaker_is_closer_to_themself_than_to_another(shared_data):
    _needs("resemblyzer")
    root = shared_data / "vctk_mini" / "wav16"
    first, second = sorted((root / "p225").glob("*.wav"))[:2]
    other = sorted((root / "p226").glob("*.wav"))[0]
    read = lambda path: sf.read(path, dtype="float32")[0]  # noqa: E731
    a, b, c = read(first), read(second), read(other)
    same_speaker = perceptual.speaker_similarity(a, b, 16000)
    other_speaker = perceptual.speaker_similarity(a, c, 16000)
    assert perceptual.speaker_similarity(a, a, 16000) == pytest.approx(1.0, abs=1e-5)
    assert same_speaker > other_speaker + 0.1


def test_missing_packages_are_named_with_the_command_that_installs_them(monkeypatch):
    monkeypatch.setattr(perceptual.importlib.util, "find_spec", lambda name: None)
    missing = perceptual.missing_packages(["visqol", "warpq", "dnsmos", "speaker_sim"])
    assert set(missing) == {"visqol", "warpq", "dnsmos", "speaker_sim"}
    assert all("pip install 'vqaudio[eval]'" in reason for reason in missing.values())
    assert perceptual.visqol(np.ones(100), np.ones(100), 16000) is None


def test_metrics_option_picks_a_subset_and_names_a_typo():
    assert choose_metrics(None) == list(METRICS)
    assert choose_metrics("pesq_wb, dnsmos") == ["pesq_wb", *DNSMOS]
    with pytest.raises(VQAudioError, match="unknown metric 'visqool'"):
        choose_metrics("pesq_wb,visqool")
