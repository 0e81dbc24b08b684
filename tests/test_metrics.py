"""Evaluation metrics, alignment and the classical baselines on signals with known answers."""

import math
import shutil
import sys

import numpy as np
import pytest

from vqaudio.data.demo import synthesize_utterance
from vqaudio.evaluation import baselines as baselines_module
from vqaudio.evaluation import metrics
from vqaudio.evaluation.alignment import align, estimate_lag
from vqaudio.evaluation.baselines import BASELINES, available_baselines, transcode

SR = 16000


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    """1.5 s of the synthetic demo speech: voiced, unvoiced and silent parts."""
    return synthesize_utterance(1, 3, 1.5, SR)


def noisy(signal: np.ndarray, snr_db: float, seed: int = 0) -> np.ndarray:
    noise = np.random.default_rng(seed).standard_normal(signal.size)
    noise *= np.sqrt(np.mean(signal**2) / np.mean(noise**2) / 10 ** (snr_db / 10))
    return (signal + noise).astype(np.float32)


def test_si_snr_known_answers(speech):
    assert metrics.si_snr(speech, speech) > 80
    # Scale invariance: a quieter or inverted copy is still a perfect estimate.
    assert metrics.si_snr(speech, 0.3 * speech) > 80
    assert metrics.si_snr(speech, -2.0 * speech) > 80
    for snr in (0.0, 10.0, 20.0):
        assert metrics.si_snr(speech, noisy(speech, snr)) == pytest.approx(snr, abs=0.3)


def test_spectral_distances_are_zero_for_identical_signals_and_exact_for_a_doubled_copy(speech):
    assert metrics.stft_distance(speech, speech, SR) == pytest.approx(0.0, abs=1e-12)
    assert metrics.log_mel_distance(speech, speech, SR) == pytest.approx(0.0, abs=1e-12)
    loud = speech / np.abs(speech).max()
    # |2S| = 2|S|: spectral convergence 1, log-magnitude difference ln 2, log-mel power difference ln 4
    # (up to the floor in near-silent bins).
    assert metrics.stft_distance(loud, 2 * loud, SR) == pytest.approx(1 + math.log(2), abs=0.03)
    assert metrics.log_mel_distance(loud, 2 * loud, SR) == pytest.approx(math.log(4), abs=0.03)


def test_spectral_distances_grow_with_noise(speech):
    stft = [metrics.stft_distance(speech, noisy(speech, snr), SR) for snr in (30, 10, 0)]
    mel = [metrics.log_mel_distance(speech, noisy(speech, snr), SR) for snr in (30, 10, 0)]
    assert stft[0] < stft[1] < stft[2]
    assert mel[0] < mel[1] < mel[2]


def test_mel_filterbank_shape_and_unit_area():
    bank = metrics.mel_filterbank(SR, 1024, 80)
    assert bank.shape == (80, 513)
    assert bank.min() >= 0.0
    # Unit area (the docstring's promise): a flat power spectrum gives every band the same power.
    np.testing.assert_allclose(np.ones(513) @ bank.T, np.ones(80), rtol=0, atol=1e-6)
    # Each filter is one contiguous run of bins; together they tile 0 Hz to Nyquist without gaps.
    support = [np.flatnonzero(row) for row in bank]
    assert all(np.all(np.diff(bins) == 1) for bins in support)
    assert support[0][0] <= 1 and support[-1][-1] >= 511
    assert all(a[-1] >= b[0] for a, b in zip(support, support[1:]))  # neighbours overlap
    # Centres (weighted mean frequency of each filter) rise strictly, spaced wider at the top (mel).
    centres = bank @ np.fft.rfftfreq(1024, 1.0 / SR) / bank.sum(axis=1)
    assert np.all(np.diff(centres) > 0)
    assert np.diff(centres)[-1] > 5 * np.diff(centres)[0]


@pytest.mark.parametrize("hz", [150.0, 300.0, 1000.0, 2500.0, 6000.0, 7500.0])
def test_a_pure_tone_lands_in_the_mel_band_centred_nearest_it(hz):
    bank = metrics.mel_filterbank(SR, 1024, 80)
    centres = bank @ np.fft.rfftfreq(1024, 1.0 / SR) / bank.sum(axis=1)
    tone = np.sin(2 * np.pi * hz * np.arange(SR) / SR)
    mel = (metrics.magnitude(tone, 1024, 256) ** 2 @ bank.T).mean(axis=0)
    band = int(mel.argmax())
    assert band == int(np.abs(centres - hz).argmin())
    assert mel[max(band - 1, 0) : band + 2].sum() > 0.99 * mel.sum()  # and almost nowhere else


def test_stft_resolutions_follow_the_sample_rate():
    assert metrics.stft_resolutions(16000) == [(512, 128), (1024, 256), (2048, 512)]
    assert metrics.stft_resolutions(8000) == [(256, 64), (512, 128), (1024, 256)]


@pytest.mark.parametrize("lag", [0, 37, -50, 803])
def test_alignment_finds_a_known_delay_and_undoes_it(speech, lag):
    if lag >= 0:
        delayed = np.concatenate([np.zeros(lag, np.float32), speech])[: speech.size]
    else:
        delayed = np.concatenate([speech[-lag:], np.zeros(-lag, np.float32)])
    assert estimate_lag(speech, delayed, SR) == lag
    reference, estimate = align(speech, delayed, lag)
    assert reference.size == estimate.size == speech.size - abs(lag)
    np.testing.assert_array_equal(reference, estimate)


def test_alignment_survives_noise_and_changes_metrics(speech):
    delayed = noisy(np.concatenate([np.zeros(120, np.float32), speech]), 5.0)
    assert estimate_lag(speech, delayed, SR) == 120
    unaligned = metrics.si_snr(speech, delayed[: speech.size])
    assert metrics.si_snr(*align(speech, delayed, 120)) > unaligned + 5


def test_alignment_of_silence_is_zero():
    silent = np.zeros(4000, np.float32)
    assert estimate_lag(silent, silent, SR) == 0


def test_pesq_and_stoi_known_answers(speech):
    pytest.importorskip("pesq")
    pytest.importorskip("pystoi")
    assert metrics.pesq_wb(speech, speech, SR) > 4.5
    degraded = metrics.pesq_wb(speech, noisy(speech, 5.0), SR)
    assert 1.0 <= degraded < 2.5
    assert metrics.stoi(speech, speech, SR) == pytest.approx(1.0, abs=1e-6)
    assert metrics.stoi(speech, noisy(speech, -5.0), SR) < 0.9
    # Other rates are resampled to 16 kHz for wide-band PESQ.
    narrow = synthesize_utterance(1, 3, 1.5, 8000)
    assert metrics.pesq_wb(narrow, narrow, 8000) > 4.5
    # STOI needs about 0.4 s of speech; PESQ finds no utterance in silence: no score, not an error.
    assert metrics.stoi(speech[:3000], speech[:3000], SR) is None
    assert metrics.pesq_wb(np.zeros(SR, np.float32), np.zeros(SR, np.float32), SR) is None


def test_missing_extras_are_named_and_give_no_score(speech, monkeypatch):
    real_find_spec = metrics.importlib.util.find_spec
    monkeypatch.setattr(metrics.importlib.util, "find_spec", lambda name: None if name == "pesq" else real_find_spec(name))
    missing = metrics.optional_metrics_missing()
    assert list(missing) == ["pesq_wb"] and "pip install 'vqaudio[eval]'" in missing["pesq_wb"]
    monkeypatch.setitem(sys.modules, "pesq", None)  # `import pesq` now raises ImportError
    monkeypatch.setitem(sys.modules, "pystoi", None)
    scores = metrics.all_metrics(speech, speech, SR)
    assert scores["pesq_wb"] is None and scores["stoi"] is None and scores["si_snr"] > 80


def test_baselines_are_skipped_with_the_package_to_install(monkeypatch):
    monkeypatch.setattr(baselines_module.shutil, "which", lambda tool: None)
    found, notes = available_baselines()
    assert found == [] and len(notes) == len(BASELINES)
    for baseline, note in zip(BASELINES, notes):
        package = "opus-tools" if baseline.key.startswith("opus") else "codec2"
        assert note.startswith(baseline.name) and f"apt install {package}" in note


@pytest.mark.parametrize("name", [b.name for b in BASELINES])
def test_baseline_codecs_round_trip_at_their_bitrate(speech, name):
    baseline = next(b for b in BASELINES if b.name == name)
    missing = [tool for tool in baseline.tools if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (Debian: opus-tools, codec2)")
    result = transcode(baseline, speech, SR)
    seconds = speech.size / SR
    # Codec2 may drop the last partial frame; Opus returns the input length.
    assert abs(result.audio.size - speech.size) <= 0.04 * SR
    assert result.audio.dtype == np.float32
    # It follows the input: the loudness of 20 ms frames rises and falls with the original's.
    reference, decoded = align(speech, result.audio, estimate_lag(speech, result.audio, SR))
    frames = reference.size // 320
    loudness = [np.log(np.square(x[: frames * 320]).reshape(frames, 320).mean(axis=1) + 1e-8) for x in (reference, decoded)]
    assert np.corrcoef(*loudness)[0, 1] > 0.8
    bits_per_second = 8 * result.bitstream_bytes / seconds
    if name.startswith("codec2"):  # a headerless bitstream: exactly the nominal rate per whole frame
        assert bits_per_second == pytest.approx(baseline.bitrate, rel=0.05)
    else:  # Ogg pages and headers add a fixed overhead
        assert baseline.bitrate * 0.5 < bits_per_second < baseline.bitrate + 8 * 2000 / seconds
