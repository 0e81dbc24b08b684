"""`vqaudio eval`: reconstruct held-out clips through the codes and measure them, beside classical codecs.

The result is a plain dict (the JSON report): one row per clip and system, a mean and spread
per metric and system, the model's raw bitrate, its decoder's likelihood of each clip
(-log2 p(x | codes) per sample, teacher-forced) and its codebook usage on the same clips, and
what was skipped and why. A two-level model reports both levels' usage and, with its priors, the
bits under the hierarchy of priors (top, then bottom given the top).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vqaudio.audio.io import write_wav
from vqaudio.errors import VQAudioError
from vqaudio.evaluation import perceptual
from vqaudio.evaluation.alignment import align, estimate_lag
from vqaudio.evaluation.baselines import (
    available_baselines,
    choose_baselines,
    transcode,
)
from vqaudio.evaluation.clips import EvalClip
from vqaudio.evaluation.metrics import (
    SIGNAL_METRICS,
    all_metrics,
    optional_metrics_missing,
)
from vqaudio.generation.engine import Backend
from vqaudio.generation.packed import Precision, int8_copy
from vqaudio.inference.codec import decode_codes
from vqaudio.inference.entropy import entropy_encode
from vqaudio.inference.load import Codec, Prior
from vqaudio.inference.priors import prior_bits
from vqaudio.models.modes import evaluating
from vqaudio.models.quantizer import usage_stats
from vqaudio.models.streaming import encode_audio

REPORT_FORMAT = "vqaudio-eval"
REPORT_VERSION = 1
MODEL_SYSTEM = "vqaudio"

ORIGINAL_SYSTEM = "original"  # the references themselves: the ceiling of the no-reference metrics

# name -> (column title, higher is better)
METRICS: dict[str, tuple[str, bool]] = {
    "si_snr": ("SI-SNR dB", True),
    "stft_distance": ("MR-STFT", False),
    "log_mel_distance": ("log-mel", False),
    "pesq_wb": ("PESQ-WB", True),
    "stoi": ("STOI", True),
    "visqol": ("ViSQOL", True),
    "warpq": ("WARP-Q", False),
    "dnsmos_sig": ("DNSMOS SIG", True),
    "dnsmos_bak": ("DNSMOS BAK", True),
    "dnsmos_ovrl": ("DNSMOS OVRL", True),
    "speaker_sim": ("spk-sim", True),
}
DNSMOS = ("dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl")
# the metrics that need no reference: the originals are scored too
NO_REFERENCE = DNSMOS


def choose_metrics(spec: str | None) -> list[str]:
    """`--metrics a,b,...` (metric names, or `dnsmos` for its three scores); None: every metric."""
    if spec is None or spec.strip().lower() == "all":
        return list(METRICS)
    chosen: list[str] = []
    for name in (part.strip().lower() for part in spec.split(",") if part.strip()):
        names = list(DNSMOS) if name == "dnsmos" else [name]
        for metric in names:
            if metric not in METRICS:
                raise VQAudioError(f"--metrics {spec!r}: unknown metric {name!r}; choose from all, dnsmos, {', '.join(METRICS)}")
            if metric not in chosen:
                chosen.append(metric)
    if not chosen:
        raise VQAudioError(f"--metrics {spec!r}: name at least one metric")
    return chosen


def _skipped(metrics: list[str]) -> dict[str, str]:
    """The chosen metrics that cannot run here, each with the reason (a package to install)."""
    missing = optional_metrics_missing()
    needs = {m: perceptual.PACKAGES["dnsmos" if m in DNSMOS else m] for m in metrics if m in perceptual.PACKAGES or m in DNSMOS}
    for metric, reason in perceptual.missing_packages(sorted({"dnsmos" if m in DNSMOS else m for m in needs})).items():
        for name in DNSMOS if metric == "dnsmos" else (metric,):
            missing[name] = reason
    return {m: reason for m, reason in missing.items() if m in metrics}


def _scores(reference: np.ndarray, estimate: np.ndarray, sample_rate: int, metrics: list[str]) -> dict[str, float | None]:
    """Every chosen metric of an aligned pair (None where it cannot be computed)."""
    row: dict[str, float | None] = {}
    row.update(all_metrics(reference, estimate, sample_rate, [m for m in metrics if m in SIGNAL_METRICS]))
    if "visqol" in metrics:
        row["visqol"] = perceptual.visqol(reference, estimate, sample_rate)
    if "warpq" in metrics:
        row["warpq"] = perceptual.warpq(reference, estimate, sample_rate)
    if any(m in metrics for m in DNSMOS):
        row.update(_dnsmos(estimate, sample_rate, metrics))
    if "speaker_sim" in metrics:
        row["speaker_sim"] = perceptual.speaker_similarity(reference, estimate, sample_rate)
    return row


def _dnsmos(audio: np.ndarray, sample_rate: int, metrics: list[str]) -> dict[str, float | None]:
    scores = perceptual.dnsmos(audio, sample_rate)
    return {m: (scores[m.removeprefix("dnsmos_")] if scores else None) for m in DNSMOS if m in metrics}


@dataclass
class EvalOptions:
    n_q: int | None = None  # residual VQ: codebooks to keep (all by default)
    temperature: float = 1.0
    seed: int = 0
    backend: Backend = "auto"
    baselines: str = "all"  # all, none, or comma-separated keys (see evaluation.baselines)
    max_lag_seconds: float = 0.1
    audio_dir: Path | None = None  # write reference and reconstructions here for listening
    metrics: str | None = None  # --metrics: a comma-separated subset of METRICS (None: all)
    listen: dict[tuple[str, str], np.ndarray] | None = None  # when a dict: every decoded clip, by (clip, system)
    precision: Precision = "fp32"  # WaveNet weights for generation (vqaudio.generation.packed)


def spread(values: list[float | None]) -> dict[str, float | int | None]:
    present = [v for v in values if v is not None and math.isfinite(v)]
    if not present:
        return {"mean": None, "std": None, "n": 0}
    return {"mean": float(np.mean(present)), "std": float(np.std(present)), "n": len(present)}


def _measure(clip: EvalClip, decoded: np.ndarray, system: str, sample_rate: int, options: EvalOptions) -> dict[str, Any]:
    lag = estimate_lag(clip.audio, decoded, sample_rate, options.max_lag_seconds)
    reference, estimate = align(clip.audio, decoded, lag)
    row: dict[str, Any] = {
        "clip": clip.id,
        "system": system,
        "speaker": clip.speaker,
        "seconds": clip.audio.size / sample_rate,
        "lag_samples": lag,
        "lag_ms": 1000.0 * lag / sample_rate,
    }
    row.update(_scores(reference, estimate, sample_rate, choose_metrics(options.metrics)))
    if options.audio_dir is not None:
        stem = clip.id.replace("/", "_")
        write_wav(options.audio_dir / f"{stem}.{system.replace(' ', '_')}.wav", decoded, sample_rate, force=True)
    if options.listen is not None:
        options.listen[(clip.id, system)] = decoded
    return row


def code_histogram(codes: list[np.ndarray], codebook_size: int) -> np.ndarray:
    """How often each code occurs in each level of a list of [n_q, frames] arrays: [n_q, K]."""
    counts = np.zeros((codes[0].shape[0], codebook_size), dtype=np.int64)
    for clip_codes in codes:
        for level, row in enumerate(clip_codes):
            counts[level] += np.bincount(row.astype(np.int64), minlength=codebook_size)
    return counts


def _usage(codes: list[np.ndarray], codebook_size: int) -> dict[str, Any]:
    """Codes used, perplexity and entropy per codebook level over all clips' codes."""
    levels = [
        {**usage_stats(torch.from_numpy(row)), "frames": int(row.sum())} for row in code_histogram(codes, codebook_size)
    ]
    return {"codebook_size": codebook_size, **levels[0], "levels": levels}


def decoder_nll_bits(codec: Codec, audio: np.ndarray, speaker: int, n_q: int | None = None) -> float | None:
    """-log2 p(x | codes) summed over the clip's μ-law samples, teacher-forced through the decoder:
    the reconstruction term of the VQ-VAE's loss, comparable between models of the same μ-law.
    None for a conv decoder, which has no likelihood. The model is not changed, whatever its mode."""
    if codec.model.waveform_decoder:
        return None
    padded = np.zeros(codec.frames_for(audio.size) * codec.hop, dtype=np.float32)
    padded[: audio.size] = audio
    tensor = torch.from_numpy(padded)[None].to(codec.device)
    with evaluating(codec.model):
        out = codec.model(tensor, torch.tensor([speaker], device=codec.device), n_q)
    nats = codec.model.sample_nll(out)[:, : audio.size].sum()
    return float(nats) / math.log(2)


def evaluate(
    codec: Codec,
    clips: list[EvalClip],
    data_description: str,
    options: EvalOptions | None = None,
    on_progress: Callable[[int], None] | None = None,
    prior: Prior | None = None,
    bottom_prior: Prior | None = None,
) -> dict[str, Any]:
    """Measure the model (and the available baselines) on `clips`; returns the JSON report.

    With a `prior` (trained on this model's codes), every clip is also entropy-coded into a .vqa
    bitstream, and the report gives the prior's bits per code and the coded bitrate. For a
    two-level model `prior` is the top prior and `bottom_prior` the bottom one: both levels are
    coded, and the report gives each level's bits under its own prior."""
    options = options or EvalOptions()
    if not clips:
        raise VQAudioError(f"no clips to evaluate in {data_description}")
    sr = codec.sample_rate
    n_q = codec.check_n_q(options.n_q)
    metrics = choose_metrics(options.metrics)
    skipped = _skipped(metrics)
    baselines, baseline_notes = available_baselines(choose_baselines(options.baselines))
    if options.audio_dir is not None:
        options.audio_dir.mkdir(parents=True, exist_ok=True)

    if prior is not None and prior.codec.fingerprint != codec.fingerprint:
        raise VQAudioError(f"{prior.checkpoint} is a prior for model {prior.codec.fingerprint}, not {codec.fingerprint}")
    if prior is not None and n_q != codec.n_q:
        raise VQAudioError(f"--n-q {n_q}: the prior codes all {codec.n_q} codebooks; drop --n-q or --prior")
    if prior is not None and (prior.level == "top") != (bottom_prior is not None):
        raise VQAudioError("a two-level model is scored under its top prior and its bottom prior together")
    top_bits = 0.0
    coded_bytes, estimated_bits = 0, 0.0
    rows: list[dict[str, Any]] = []
    # the likelihood of the weights that generate: int8-rounded ones with --precision int8
    nll_codec = replace(codec, model=int8_copy(codec.model)) if options.precision == "int8" else codec
    all_codes: list[np.ndarray] = []
    all_top: list[np.ndarray] = []
    nll_bits: float | None = 0.0
    stream_bytes: dict[str, int] = {b.name: 0 for b in baselines}
    unknown_speakers = 0
    done = 0
    for clip in clips:
        if options.audio_dir is not None:
            write_wav(options.audio_dir / f"{clip.id.replace('/', '_')}.reference.wav", clip.audio, sr, force=True)
        codes, top = encode_audio(codec.model, clip.audio, n_q)
        all_codes.append(codes)
        if top is not None:
            all_top.append(top)
        if clip.speaker in codec.speakers:
            speaker = codec.speakers.index(clip.speaker)
        else:
            speaker, unknown_speakers = 0, unknown_speakers + 1
        decoded = decode_codes(codec, codes, speaker, clip.audio.size, options.temperature, options.seed, options.backend, top)
        rows.append(_measure(clip, decoded, MODEL_SYSTEM, sr, options))
        clip_nll = decoder_nll_bits(nll_codec, clip.audio, speaker, n_q)
        if clip_nll is not None:
            nll_bits += clip_nll
            rows[-1]["nll_bits_per_sample"] = clip_nll / clip.audio.size
        else:
            nll_bits = None
        if prior is not None:
            encoded = entropy_encode(prior, codes, speaker, clip.audio.size, top=top, bottom_prior=bottom_prior)
            coded_bytes += len(encoded.data)
            rows[-1]["vqa_bytes"] = len(encoded.data)
            if bottom_prior is not None and top is not None:  # each level's bits under its own prior
                bits_top, bits_bottom = prior_bits(prior, top, speaker), prior_bits(bottom_prior, codes, speaker, top)
                top_bits += bits_top
                estimated_bits += bits_bottom
                rows[-1].update(prior_bits_top=bits_top, prior_bits_bottom=bits_bottom)
            else:
                estimated_bits += encoded.estimated_bits
                rows[-1]["prior_bits_per_code"] = encoded.estimated_bits / codes.size
        if any(m in metrics for m in NO_REFERENCE):  # the ceiling: the original recording itself
            rows.append({"clip": clip.id, "system": ORIGINAL_SYSTEM, "speaker": clip.speaker,
                         "seconds": clip.audio.size / sr, "lag_samples": 0, "lag_ms": 0.0,
                         **{m: None for m in metrics}, **_dnsmos(clip.audio, sr, metrics)})  # fmt: skip
        done += 1
        if on_progress:
            on_progress(done)
        for baseline in baselines:
            result = transcode(baseline, clip.audio, sr)
            stream_bytes[baseline.name] += result.bitstream_bytes
            rows.append(_measure(clip, result.audio, baseline.name, sr, options))
            done += 1
            if on_progress:
                on_progress(done)

    seconds = sum(clip.audio.size for clip in clips) / sr
    samples = sum(clip.audio.size for clip in clips)
    systems = [
        {
            "name": MODEL_SYSTEM,
            "bitrate": codec.bitrate(n_q),
            "stream_bitrate": codec.bitrate(n_q),
            "top_bitrate": codec.top_bitrate(),
            "nll_bits_per_sample": nll_bits / samples if nll_bits is not None else None,
        }
    ]
    systems += [{"name": b.name, "bitrate": b.bitrate, "stream_bitrate": 8 * stream_bytes[b.name] / seconds} for b in baselines]
    if any(r["system"] == ORIGINAL_SYSTEM for r in rows):
        systems.append({"name": ORIGINAL_SYSTEM, "bitrate": None, "stream_bitrate": None})
    for system in systems:
        mine = [r for r in rows if r["system"] == system["name"]]
        system["summary"] = {m: spread([r.get(m) for r in mine]) for m in [*METRICS, "lag_ms"]}
    if prior is not None and bottom_prior is not None:
        total_top = sum(t.size for t in all_top)
        total_codes = sum(c.size for c in all_codes)
        systems[0].update(
            prior_checkpoint=str(prior.checkpoint),
            bottom_prior_checkpoint=str(bottom_prior.checkpoint),
            prior_bits_per_top_code=top_bits / total_top,
            prior_bits_per_bottom_code=estimated_bits / total_codes,
            prior_bitrate=(top_bits + estimated_bits) / seconds,
            entropy_coded_bitrate=8 * coded_bytes / seconds,
        )
    elif prior is not None:
        total_codes = sum(c.size for c in all_codes)
        systems[0].update(
            prior_checkpoint=str(prior.checkpoint),
            prior_bits_per_code=estimated_bits / total_codes,
            prior_bitrate=estimated_bits / seconds,
            entropy_coded_bitrate=8 * coded_bytes / seconds,
        )
    if "prior_bitrate" in systems[0] and nll_bits is not None:  # -log2 p(x) bound: the decoder's bits plus the codes' bits under the prior(s)
        systems[0]["bits_per_sample_under_prior"] = systems[0]["nll_bits_per_sample"] + systems[0]["prior_bitrate"] / sr
    notes = list(baseline_notes)
    if unknown_speakers:
        notes.append(f"{unknown_speakers} clip(s) by speakers the model does not know: decoded as {codec.speakers[0]}")
    return {
        "format": REPORT_FORMAT,
        "version": REPORT_VERSION,
        "checkpoint": str(codec.checkpoint),
        "fingerprint": codec.fingerprint,
        "step": codec.step,
        "data": data_description,
        "clips_evaluated": len(clips),
        "seconds": seconds,
        "sample_rate": sr,
        "n_q": n_q,
        "temperature": options.temperature,
        "seed": options.seed,
        "precision": options.precision,
        "metrics": metrics,
        "codebook_usage": _usage(all_codes, codec.codebook_size),
        "top_codebook_usage": _usage(all_top, codec.top_codebook_size or 2) if all_top else None,
        "systems": systems,
        "skipped_metrics": skipped,
        "notes": notes,
        "clips": rows,
    }
