"""`vqaudio plot`: the pictures people look at instead of reading logs.

Three PNG files, drawn with matplotlib's object API (no pyplot state, no display needed):
training curves from `metrics.jsonl`, original-above-reconstruction spectrograms of one clip,
and a codebook usage histogram over the held-out clips.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure

from vqaudio.errors import VQAudioError
from vqaudio.evaluation.clips import EvalClip, select_clips
from vqaudio.evaluation.evaluate import code_histogram
from vqaudio.evaluation.metrics import magnitude
from vqaudio.fileio import atomic_output
from vqaudio.inference.codec import decode_codes
from vqaudio.inference.load import Codec, load_codec
from vqaudio.models.quantizer import usage_stats
from vqaudio.models.streaming import encode_audio
from vqaudio.train.run_dir import resolve_run_dir

SKIP_KEYS = {"step", "split", "time"}


def save_figure(figure: Figure, path: Path) -> Path:
    with atomic_output(path, force=True) as tmp:
        figure.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    return path


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The records of a run's metrics.jsonl (a torn last line from a killed run is skipped)."""
    if not path.exists():
        raise VQAudioError(f"{path}: no such file; is this a run folder with at least one logged step?")
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    if not records:
        raise VQAudioError(f"{path}: no metrics logged yet")
    return records


def plot_training_curves(records: list[dict[str, Any]], path: Path, title: str = "") -> Path:
    """One panel per logged quantity (every loss term, perplexity, codes used, lr, ...): training
    windows as a line, validation passes as points, against step."""
    keys = sorted({k for r in records for k, v in r.items() if k not in SKIP_KEYS and isinstance(v, (int, float))})
    columns = 3
    rows = max(1, math.ceil(len(keys) / columns))
    figure = Figure(figsize=(4.2 * columns, 2.6 * rows), layout="constrained")
    for i, key in enumerate(keys):
        axes = figure.add_subplot(rows, columns, i + 1)
        for split, style in (("train", {"linewidth": 1.2}), ("valid", {"marker": "o", "markersize": 4})):
            points = [(r["step"], r[key]) for r in records if r.get("split") == split and key in r]
            if points:
                steps, values = zip(*points)
                axes.plot(steps, values, label=split, **style)
        axes.set_title(key, fontsize=10)
        axes.set_xlabel("step", fontsize=8)
        axes.tick_params(labelsize=8)
        axes.grid(alpha=0.3)
        if i == 0:
            axes.legend(fontsize=8)
    if title:
        figure.suptitle(title)
    return save_figure(figure, path)


def plot_spectrograms(reference: np.ndarray, reconstruction: np.ndarray, sample_rate: int, path: Path, title: str = "") -> Path:
    """Log-magnitude spectrograms of the original above the reconstruction, on the same scale."""
    n_fft = 1 << int(round(np.log2(sample_rate * 0.032)))
    hop = n_fft // 4
    images = [20 * np.log10(magnitude(a, n_fft, hop).T + 1e-5) for a in (reference, reconstruction)]
    top = max(float(im.max()) for im in images)
    extent = (0.0, reference.size / sample_rate, 0.0, sample_rate / 2000.0)
    figure = Figure(figsize=(10, 6), layout="constrained")
    for i, (image, name) in enumerate(zip(images, ("original", "reconstruction"))):
        axes = figure.add_subplot(2, 1, i + 1)
        shown = axes.imshow(image, origin="lower", aspect="auto", extent=extent, vmin=top - 80, vmax=top, cmap="magma")
        axes.set_title(name, fontsize=10)
        axes.set_ylabel("kHz")
        if i == 1:
            axes.set_xlabel("seconds")
        figure.colorbar(shown, ax=axes, label="dB")
    if title:
        figure.suptitle(title)
    return save_figure(figure, path)


def plot_codebook_usage(counts: np.ndarray, path: Path, title: str = "") -> Path:
    """For each codebook level: how often each code is chosen, by code index and by rank."""
    counts = np.atleast_2d(counts)
    figure = Figure(figsize=(11, 2.8 * counts.shape[0]), layout="constrained")
    for level, row in enumerate(counts):
        stats = usage_stats(torch.from_numpy(row))
        label = f"codebook {level + 1}: " if counts.shape[0] > 1 else ""
        label += f"{stats['codes_used']:.0f} of {row.size} codes used, perplexity {stats['perplexity']:.1f}"
        by_index = figure.add_subplot(counts.shape[0], 2, 2 * level + 1)
        by_index.bar(np.arange(row.size), row, width=1.0)
        by_index.set_title(label, fontsize=10)
        by_index.set_xlabel("code index", fontsize=8)
        by_index.set_ylabel("frames", fontsize=8)
        by_rank = figure.add_subplot(counts.shape[0], 2, 2 * level + 2)
        by_rank.bar(np.arange(row.size), np.sort(row)[::-1], width=1.0)
        by_rank.axhline(row.sum() / row.size, color="grey", linestyle="--", linewidth=1, label="uniform")
        by_rank.set_xlabel("codes, most used first", fontsize=8)
        by_rank.legend(fontsize=8)
    if title:
        figure.suptitle(title)
    return save_figure(figure, path)


def _pick_clip(clips: list[EvalClip], wanted: str | None) -> EvalClip:
    if wanted is None:
        return clips[0]
    for clip in clips:
        if clip.id == wanted:
            return clip
    shown = ", ".join(c.id for c in clips[:8])
    raise VQAudioError(f"--clip {wanted!r}: not among the held-out clips ({shown}); give an audio file instead")


def plot_run(
    run_dir: Path,
    codec: Codec,
    clips: list[EvalClip],
    clip_id: str | None = None,
    temperature: float = 1.0,
    seed: int = 0,
    backend: str = "auto",
) -> list[Path]:
    """Write the three pictures of a run into `run_dir/plots/`; returns their paths.

    `clips` are the held-out clips (or the user's own); the usage histogram counts the codes of
    all of them, the spectrograms show `clip_id` (default: the first) decoded by the model."""
    folder = run_dir / "plots"
    name = f"{run_dir.parent.name}/{run_dir.name}, step {codec.step}"
    written = [plot_training_curves(read_metrics(run_dir / "metrics.jsonl"), folder / "training_curves.png", name)]
    clip = _pick_clip(clips, clip_id)
    codes, top = encode_audio(codec.model, clip.audio)
    speaker = codec.speakers.index(clip.speaker) if clip.speaker in codec.speakers else 0
    decoded = decode_codes(codec, codes, speaker, clip.audio.size, temperature, seed, backend, top)  # type: ignore[arg-type]
    stem = clip.id.replace("/", "_")
    title = f"{clip.id}: decoded as {codec.speakers[speaker]} from {codec.bitrate():.0f} bit/s codes"
    written.append(plot_spectrograms(clip.audio, decoded, codec.sample_rate, folder / f"spectrogram_{stem}.png", title))
    counts = code_histogram([encode_audio(codec.model, each.audio)[0] for each in clips], codec.codebook_size)
    usage_title = f"codebook usage over {len(clips)} clips ({int(counts[0].sum())} frames)"
    written.append(plot_codebook_usage(counts, folder / "codebook_usage.png", usage_title))
    return written


def plot_run_dir(
    run_dir: Path,
    checkpoint: Path | None,
    clip: str | None,
    data: str | None,
    temperature: float,
    seed: int,
    device: torch.device,
) -> list[Path]:
    """`vqaudio plot`: the run's pictures, from its newest checkpoint (or `checkpoint`), on its
    held-out clips (or `data`); `clip` is a held-out clip id or an audio file."""
    run = resolve_run_dir(run_dir)
    codec = load_codec(checkpoint or run, device)
    clips, _ = select_clips(data, codec.recipe, codec.sample_rate, codec.speakers)
    if clip is not None and Path(clip).is_file():
        own, _ = select_clips(clip, codec.recipe, codec.sample_rate, codec.speakers)
        clips, clip = own + clips, own[0].id
    return plot_run(run, codec, clips, clip, temperature, seed)
