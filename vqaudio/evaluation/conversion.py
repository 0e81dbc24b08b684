"""Voice conversion measured: every held-out clip decoded as other speakers, judged as ZeroSpeech
and the Voice Conversion Challenge judge it, by speaker similarity and naturalness.

For each clip and each target speaker (every other speaker of the model that has a clip here, or
those given), the clip's codes are decoded with the target's embedding. The converted audio's
speaker embedding is compared with the mean embedding of the target speaker's clips (it should be
close) and of the source speaker's (it should move away), and DNSMOS rates its naturalness. For
reference, the plain reconstructions (decoded as their own speaker) are measured the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from vqaudio.errors import VQAudioError
from vqaudio.evaluation import perceptual
from vqaudio.evaluation.clips import EvalClip
from vqaudio.evaluation.evaluate import spread
from vqaudio.inference.codec import decode_codes
from vqaudio.inference.load import Codec
from vqaudio.models.streaming import encode_audio


def _centroid(embeddings: list[np.ndarray | None]) -> np.ndarray | None:
    present = [e for e in embeddings if e is not None]
    if not present:
        return None
    mean = np.mean(present, axis=0)
    return mean / max(float(np.linalg.norm(mean)), 1e-12)


def evaluate_conversion(
    codec: Codec,
    clips: list[EvalClip],
    targets: list[str] | None = None,
    temperature: float = 1.0,
    seed: int = 0,
    backend: str = "auto",
    on_progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """The `conversion` part of the eval report: per converted clip its similarity to the target
    and to the source speaker and its DNSMOS, their summaries, and the same for the plain
    reconstructions."""
    missing = perceptual.missing_packages(["speaker_sim"])
    if missing:
        raise VQAudioError(f"--convert needs speaker embeddings: {missing['speaker_sim']}")
    sr = codec.sample_rate
    known = [clip for clip in clips if clip.speaker in codec.speakers]
    if not known:
        raise VQAudioError("--convert: none of the clips is by a speaker the model knows (name them p225/x.wav or p225_x.wav)")
    speakers_here = sorted({clip.speaker for clip in known}, key=codec.speakers.index)  # type: ignore[arg-type]
    wanted = targets if targets is not None else speakers_here
    try:
        wanted = [codec.speakers[codec.speaker_index(name)] for name in wanted]  # names or indices
    except VQAudioError as exc:
        raise VQAudioError(str(exc).replace("--speaker", "--to", 1)) from None
    embeddings = {clip.id: perceptual.speaker_embedding(clip.audio, sr) for clip in known}
    centroids = {name: _centroid([embeddings[c.id] for c in known if c.speaker == name]) for name in set(wanted) | set(speakers_here)}
    rows: list[dict[str, Any]] = []
    done = 0
    for clip in known:
        codes, top = encode_audio(codec.model, clip.audio)
        for target in [clip.speaker, *[t for t in wanted if t != clip.speaker]]:
            index = codec.speaker_index(target)
            audio = decode_codes(codec, codes, index, clip.audio.size, temperature, seed, backend, top)  # type: ignore[arg-type]
            embedding = perceptual.speaker_embedding(audio, sr)
            scores = perceptual.dnsmos(audio, sr) or {}
            rows.append({
                "clip": clip.id, "source": clip.speaker, "target": target, "converted": target != clip.speaker,
                "target_similarity": perceptual.cosine(embedding, centroids.get(target)),
                "source_similarity": perceptual.cosine(embedding, centroids.get(clip.speaker)),
                **{f"dnsmos_{k}": v for k, v in scores.items()},
            })  # fmt: skip
            done += 1
            if on_progress is not None:
                on_progress(done)
    keys = ("target_similarity", "source_similarity", "dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl")

    def summary(converted: bool) -> dict[str, Any]:
        mine = [r for r in rows if r["converted"] == converted]
        return {key: spread([r.get(key) for r in mine]) for key in keys}

    return {
        "targets": list(wanted),
        "speakers_with_clips": speakers_here,
        "converted": summary(True),
        "reconstructed": summary(False),
        "rows": rows,
    }


def conversion_runs(codec: Codec, clips: list[EvalClip], targets: list[str] | None) -> int:
    """Decodes `evaluate_conversion` makes (for a progress bar)."""
    known = [clip for clip in clips if clip.speaker in codec.speakers]
    wanted = targets if targets is not None else sorted({c.speaker for c in known})  # type: ignore[type-var]
    return sum(1 + len([t for t in wanted if t != clip.speaker]) for clip in known)
