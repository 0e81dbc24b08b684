"""Training the code prior: crops of a VQ-VAE's code sequences in, its held-out utterances for validation.

Over a two-level VQ-VAE, `prior.level` picks the top codes (an unconditioned prior) or the bottom
codes (a prior conditioned on the top codes above them; crops start on whole top frames).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from vqaudio.data.corpus import ProgressFn
from vqaudio.errors import VQAudioError
from vqaudio.formats.checkpoint import list_checkpoints, read_checkpoint
from vqaudio.formats.metadata import AudioVQVAEMetadata, CodePriorMetadata
from vqaudio.models.audio_vqvae import AudioVQVAE
from vqaudio.models.build import build_code_prior, build_model
from vqaudio.models.code_prior import IGNORE
from vqaudio.recipe import CodePriorRecipe, Recipe
from vqaudio.tasks.code_corpus import CodeCorpus, extract_code_corpus
from vqaudio.train.run_dir import newest_checkpoint
from vqaudio.train.setup import Batch, Shard, TrainSetup

KIND = "code_prior"


def resolve_vqvae(spec: str, runs_dir: Path, kind: str = "audio_vqvae", two_level: bool | None = None) -> Path:
    """prior.vqvae: "newest" (of `kind`; two-level or not when `two_level` says), a run folder (its
    newest checkpoint) or a checkpoint file."""
    if spec == "newest":
        return newest_checkpoint(runs_dir, kind, two_level)
    path = Path(spec).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        found = list_checkpoints(path)
        if not found:
            raise VQAudioError(f"prior.vqvae {spec!r}: the folder holds no checkpoints; give a VQ-VAE run folder")
        return found[-1]
    raise VQAudioError(f"prior.vqvae {spec!r}: no such run folder or checkpoint (or use prior.vqvae=newest)")


def code_batch(corpus: CodeCorpus, items: list[int], starts: list[int], length: int, with_top: bool = False) -> Batch:
    """Code crops [B, n_q, length], padded with IGNORE past an utterance's end; `with_top` adds the
    top codes above them [B, 1, length / ratio] (starts and length are whole top frames)."""
    batch = np.full((len(items), corpus.codes.shape[0], length), IGNORE, dtype=np.int64)
    for row, (i, start) in enumerate(zip(items, starts)):
        piece = corpus.utterance(i)[:, start : start + length]
        batch[row, :, : piece.shape[1]] = piece
    speaker = torch.tensor([int(corpus.speaker_index[i]) for i in items], dtype=torch.long)
    result = {"codes": torch.from_numpy(batch), "speaker": speaker}
    if with_top:
        ratio = corpus.ratio
        top = np.full((len(items), 1, length // ratio), IGNORE, dtype=np.int64)
        for row, (i, start) in enumerate(zip(items, starts)):
            piece = corpus.utterance_top(i)[:, start // ratio : (start + length) // ratio]
            top[row, :, : piece.shape[1]] = piece
        result["top"] = torch.from_numpy(top)
    return result


def top_level_view(corpus: CodeCorpus) -> CodeCorpus:
    """The top codes of a two-level corpus, laid out like one-level codes."""
    assert corpus.top is not None
    return replace(corpus, codes=corpus.top, offsets=corpus.offsets // corpus.ratio, top=None, ratio=1)


def _check_level(level: str | None, two_level: bool, checkpoint: Path) -> None:
    if two_level and level is None:
        raise VQAudioError(f"{checkpoint} is a two-level VQ-VAE: set prior.level to top or bottom (one prior per level)")
    if not two_level and level is not None:
        raise VQAudioError(f"prior.level {level}: {checkpoint} is a one-level VQ-VAE; remove prior.level")


def build_code_prior_task(recipe: Recipe, on_progress: ProgressFn | None = None) -> TrainSetup:
    assert isinstance(recipe, CodePriorRecipe)  # the recipe schema insists on a prior section
    # a prior with a level is over a two-level model, one without over a one-level model: "newest" of those
    checkpoint = read_checkpoint(resolve_vqvae(recipe.prior.vqvae, Path(recipe.train.runs_dir), two_level=recipe.prior.level is not None))
    if checkpoint.kind != "audio_vqvae":
        raise VQAudioError(f"prior.vqvae: {checkpoint.path} holds a {checkpoint.kind} model, not an audio VQ-VAE")
    vq = build_model(checkpoint)
    meta = checkpoint.metadata
    assert isinstance(vq, AudioVQVAE) and isinstance(meta, AudioVQVAEMetadata)
    corpus, cache = extract_code_corpus(vq, checkpoint, on_progress)
    if not corpus.train:
        raise VQAudioError(f"{checkpoint.path}: its corpus has no utterances left for training after the held-out split")
    level = recipe.prior.level
    two_level = vq.top is not None
    _check_level(level, two_level, checkpoint.path)
    crop = recipe.prior.crop_frames
    conditioned = level == "bottom"
    step_frames = vq.ratio if conditioned else 1  # a bottom crop starts and ends on whole top frames
    if conditioned and crop % vq.ratio:
        raise VQAudioError(f"prior.crop_frames ({crop}) must be a multiple of {vq.ratio}, the bottom frames per top code")
    if level == "top":
        corpus = top_level_view(corpus)
    batch_size = recipe.train.batch_size
    frames = np.array([corpus.frames(i) for i in corpus.train], dtype=np.float64)
    weights = frames / frames.sum()

    def train_batch(step: int, shard: Shard) -> Batch:
        rng = np.random.default_rng([recipe.seed, step])
        items = [corpus.train[c] for c in rng.choice(len(corpus.train), size=shard.total, p=weights)]
        starts = [int(rng.integers(0, max(1, (corpus.frames(i) - crop) // step_frames + 1))) * step_frames for i in items]
        return code_batch(corpus, shard.take(items), shard.take(starts), crop, conditioned)

    def valid_batches() -> Iterator[Batch]:
        for first in range(0, len(corpus.valid), batch_size):
            items = corpus.valid[first : first + batch_size]
            yield code_batch(corpus, items, [0] * len(items), max(corpus.frames(i) for i in items), conditioned)

    torch.manual_seed(recipe.seed)
    top_size = vq.top_codebook_size or 0
    speakers = len(meta.speakers)
    if level == "top":
        model = build_code_prior(recipe.prior, top_size, 1, speakers)
    else:
        condition = top_size if conditioned else 0
        model = build_code_prior(recipe.prior, vq.codebook_size, vq.n_q, speakers, condition, vq.ratio)
    metadata = CodePriorMetadata(
        speakers=meta.speakers,
        sample_rate=meta.sample_rate,
        hop=vq.top_hop if level == "top" else vq.hop,
        codebook_size=model.codebook_size,
        n_q=model.n_q,
        level=level,
        ratio=vq.ratio,
        condition_codes=top_size if conditioned else 0,
        vqvae_checkpoint=str(checkpoint.path.resolve()),
        vqvae_fingerprint=checkpoint.fingerprint,
        code_cache=str(cache),
        train_utterances=len(corpus.train),
        valid_ids=[corpus.ids[i] for i in corpus.valid],
    )
    return TrainSetup(KIND, model, train_batch, valid_batches, metadata)
