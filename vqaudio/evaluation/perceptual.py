"""Metrics made for generative speech codecs, each from a package that ships its model:

- ViSQOL v3 in speech mode (`visqol-python`, with the lattice model it ships): MOS-LQO, 1 to
  about 4.75, against a reference; the codec papers (SoundStream, EnCodec, Lyra) report it;
- WARP-Q (`warpq`): a distance made for generative codecs, which sample their own phase; the raw
  score, lower is better (0 for identical signals after its voice-activity trimming);
- DNSMOS P.835 (`speechmos`, ONNX models on `onnxruntime`): SIG, BAK and OVRL MOS predicted
  without a reference, so an original recording gets scores too (the ceiling);
- speaker similarity (`resemblyzer`, with the GE2E encoder weights it ships): the cosine of the
  speaker embeddings of two recordings.

Each model is loaded once, on first use, on the CPU. A missing package is not an error: the
metric's function returns None and `missing_packages` says how to install it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import warnings
from functools import lru_cache
from typing import Any

import numpy as np

from vqaudio.audio.io import resample

RATE = 16000  # every model here works on 16 kHz speech
INSTALL = "pip install 'vqaudio[eval]'"
# metric -> the module it needs
PACKAGES = {"visqol": "visqol", "warpq": "warpq", "dnsmos": "speechmos", "speaker_sim": "resemblyzer"}


def missing_packages(metrics: list[str]) -> dict[str, str]:
    """The metrics (of `metrics`) whose package is not installed, each with the reason."""
    missing = {}
    for metric in metrics:
        module = PACKAGES.get(metric)
        if module is not None and importlib.util.find_spec(module) is None:
            missing[metric] = f"the {module!r} package is not installed ({INSTALL})"
    return missing


def _at_16k(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """Mono float32 in [-1, 1] at 16 kHz (resampling can overshoot full scale a little)."""
    audio = np.asarray(audio, dtype=np.float32)
    audio = audio if sample_rate == RATE else resample(audio, sample_rate, RATE)
    return np.clip(audio, -1.0, 1.0)


@contextlib.contextmanager
def _quiet(native: bool = False):
    """These packages print and warn freely; the eval table is the only output. `native`: also
    silence what compiled code writes to the stderr file descriptor (ViSQOL's model runtime)."""
    saved = os.dup(2) if native else None
    try:
        if saved is not None:
            with open(os.devnull, "w") as sink:
                os.dup2(sink.fileno(), 2)
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        if saved is not None:
            os.dup2(saved, 2)
            os.close(saved)


@lru_cache(maxsize=1)
def _visqol() -> Any:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # the lattice model's runtime greets on stderr otherwise
    from visqol import VisqolApi

    api = VisqolApi()
    with _quiet(native=True):
        api.create(mode="speech")
    return api


def visqol(reference: np.ndarray, estimate: np.ndarray, sample_rate: int) -> float | None:
    """ViSQOL v3 speech-mode MOS-LQO of `estimate` against `reference` (higher is better)."""
    if importlib.util.find_spec("visqol") is None or not np.any(reference):
        return None
    ref, est = _at_16k(reference, sample_rate), _at_16k(estimate, sample_rate)
    try:
        with _quiet(native=True):
            result = _visqol().measure_from_arrays(ref.astype(np.float64), est.astype(np.float64), RATE)
    except (ValueError, IndexError):  # too short, or too quiet, for one of its patches
        return None
    return float(result.moslqo)


@lru_cache(maxsize=1)
def _warpq() -> Any:
    # pyvad, which WARP-Q uses for voice activity, calls numpy.lib.pad, gone since NumPy 2.0:
    # give it the function under its old name (the same function).
    if not hasattr(np.lib, "pad"):
        np.lib.pad = np.pad  # type: ignore[attr-defined]
    from warpq.core import warpqMetric

    with _quiet():
        return warpqMetric(sr=RATE, n_jobs=1)


def warpq(reference: np.ndarray, estimate: np.ndarray, sample_rate: int) -> float | None:
    """WARP-Q's raw score of `estimate` against `reference` (lower is better)."""
    if importlib.util.find_spec("warpq") is None or not np.any(reference) or not np.any(estimate):
        return None
    ref, est = _at_16k(reference, sample_rate), _at_16k(estimate, sample_rate)
    try:
        with _quiet():
            result = _warpq().evaluate(ref, est, arr_sr=RATE)
    except (ValueError, IndexError):  # too little voiced speech for one patch
        return None
    return float(result["raw_warpq_score"])


def dnsmos(audio: np.ndarray, sample_rate: int) -> dict[str, float] | None:
    """DNSMOS P.835 of one recording, no reference: {'sig', 'bak', 'ovrl'} MOS (higher is better)."""
    if importlib.util.find_spec("speechmos") is None or not np.any(audio):
        return None
    from speechmos import dnsmos as model

    clip = _at_16k(audio, sample_rate)
    with _quiet():
        scores = model.run(clip, RATE)
    return {"sig": float(scores["sig_mos"]), "bak": float(scores["bak_mos"]), "ovrl": float(scores["ovrl_mos"])}


@lru_cache(maxsize=1)
def _voice_encoder() -> Any:
    from resemblyzer import VoiceEncoder

    with _quiet():
        return VoiceEncoder(device="cpu", verbose=False)


def speaker_embedding(audio: np.ndarray, sample_rate: int) -> np.ndarray | None:
    """A unit-length speaker embedding (resemblyzer's GE2E encoder), None without the package
    or without voiced speech."""
    if importlib.util.find_spec("resemblyzer") is None or not np.any(audio):
        return None
    from resemblyzer import preprocess_wav

    with _quiet():
        wav = preprocess_wav(_at_16k(audio, sample_rate), source_sr=RATE)
        if wav.size < RATE // 4:  # under a quarter second of voice after trimming silences
            return None
        embedding = _voice_encoder().embed_utterance(wav)
    return embedding / max(float(np.linalg.norm(embedding)), 1e-12)


def cosine(a: np.ndarray | None, b: np.ndarray | None) -> float | None:
    if a is None or b is None:
        return None
    return float(np.dot(a, b) / max(float(np.linalg.norm(a) * np.linalg.norm(b)), 1e-12))


def speaker_similarity(reference: np.ndarray, estimate: np.ndarray, sample_rate: int) -> float | None:
    """Cosine similarity of the two recordings' speaker embeddings (1 for the same voice)."""
    return cosine(speaker_embedding(reference, sample_rate), speaker_embedding(estimate, sample_rate))
