"""Training the code prior: crops of a VQ-VAE's code sequences in, its held-out utterances for validation."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from vqaudio.code_corpus import CodeCorpus, extract_code_corpus
from vqaudio.codec import load_codec
from vqaudio.data.corpus import ProgressFn
from vqaudio.errors import VQAudioError
from vqaudio.models.code_prior import IGNORE, CodePrior
from vqaudio.recipe import PriorConfig, Recipe
from vqaudio.train.checkpoint import list_checkpoints
from vqaudio.train.run_dir import newest_checkpoint
from vqaudio.train.trainer import Batch, Shard, TrainSetup

KIND = "code_prior"


def resolve_vqvae(spec: str, runs_dir: Path, kind: str = "audio_vqvae") -> Path:
    """prior.vqvae: "newest" (of `kind`), a run folder (its newest checkpoint) or a checkpoint file."""
    if spec == "newest":
        return newest_checkpoint(runs_dir, kind)
    path = Path(spec).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        found = list_checkpoints(path)
        if not found:
            raise VQAudioError(f"prior.vqvae {spec!r}: the folder holds no checkpoints; give a VQ-VAE run folder")
        return found[-1]
    raise VQAudioError(f"prior.vqvae {spec!r}: no such run folder or checkpoint (or use prior.vqvae=newest)")


def build_prior_model(config: PriorConfig, codebook_size: int, n_q: int, num_speakers: int) -> CodePrior:
    return CodePrior(
        codebook_size,
        n_q,
        num_speakers,
        layers=config.layers,
        stacks=config.stacks,
        kernel_size=config.kernel_size,
        residual_channels=config.residual_channels,
        gate_channels=config.gate_channels,
        skip_channels=config.skip_channels,
        speaker_dim=config.speaker_dim,
    )


def code_batch(corpus: CodeCorpus, items: list[int], starts: list[int], length: int) -> Batch:
    """Code crops [B, n_q, length], padded with IGNORE past an utterance's end."""
    batch = np.full((len(items), corpus.codes.shape[0], length), IGNORE, dtype=np.int64)
    for row, (i, start) in enumerate(zip(items, starts)):
        piece = corpus.utterance(i)[:, start : start + length]
        batch[row, :, : piece.shape[1]] = piece
    speaker = torch.tensor([int(corpus.speaker_index[i]) for i in items], dtype=torch.long)
    return {"codes": torch.from_numpy(batch), "speaker": speaker}


def build_code_prior(recipe: Recipe, on_progress: ProgressFn | None = None) -> TrainSetup:
    assert recipe.prior is not None  # the recipe schema insists
    checkpoint = resolve_vqvae(recipe.prior.vqvae, Path(recipe.train.runs_dir))
    codec = load_codec(checkpoint, torch.device("cpu"))
    corpus, cache = extract_code_corpus(codec, on_progress)
    if not corpus.train:
        raise VQAudioError(f"{checkpoint}: its corpus has no utterances left for training after the held-out split")
    crop = recipe.prior.crop_frames
    batch_size = recipe.train.batch_size
    frames = np.array([corpus.frames(i) for i in corpus.train], dtype=np.float64)
    weights = frames / frames.sum()

    def train_batch(step: int, shard: Shard) -> Batch:
        rng = np.random.default_rng([recipe.seed, step])
        items = [corpus.train[c] for c in rng.choice(len(corpus.train), size=shard.total, p=weights)]
        starts = [int(rng.integers(0, max(1, corpus.frames(i) - crop + 1))) for i in items]
        return code_batch(corpus, shard.take(items), shard.take(starts), crop)

    def valid_batches() -> Iterator[Batch]:
        for first in range(0, len(corpus.valid), batch_size):
            items = corpus.valid[first : first + batch_size]
            yield code_batch(corpus, items, [0] * len(items), max(corpus.frames(i) for i in items))

    torch.manual_seed(recipe.seed)
    model = build_prior_model(recipe.prior, codec.codebook_size, codec.n_q, len(codec.speakers))
    metadata = {
        "speakers": codec.speakers,
        "sample_rate": codec.sample_rate,
        "hop": codec.hop,
        "codebook_size": codec.codebook_size,
        "n_q": codec.n_q,
        "vqvae_checkpoint": str(checkpoint.resolve()),
        "vqvae_fingerprint": codec.fingerprint,
        "code_cache": str(cache),
        "train_utterances": len(corpus.train),
        "valid_ids": [corpus.ids[i] for i in corpus.valid],
    }
    return TrainSetup(KIND, model, train_batch, valid_batches, metadata)
