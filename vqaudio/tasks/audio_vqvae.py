"""Training the audio VQ-VAE: random crops of the corpus in, held-out utterances for validation."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch import nn

from vqaudio.data.corpus import AudioCorpus, ProgressFn, heldout_split, prepare_corpus
from vqaudio.errors import VQAudioError
from vqaudio.formats.metadata import AudioVQVAEMetadata
from vqaudio.models.build import build_audio_vqvae, build_critic, build_spectral_loss
from vqaudio.recipe import Recipe, TrainConfig
from vqaudio.train.adversarial import AdversarialStep
from vqaudio.train.setup import Batch, Optimization, Shard, TrainSetup

KIND = "audio_vqvae"


def crop_batch(corpus: AudioCorpus, items: list[int], starts: list[int], length: int) -> Batch:
    audio = np.stack([corpus.crop(i, s, length) for i, s in zip(items, starts)])
    speaker = [corpus.speaker_index[i] for i in items]
    return {"audio": torch.from_numpy(audio), "speaker": torch.tensor(speaker, dtype=torch.long)}


def build_audio_vqvae_task(recipe: Recipe, on_progress: ProgressFn | None = None) -> TrainSetup:
    corpus = prepare_corpus(recipe.data, on_progress)
    train_items, valid_items = heldout_split(corpus, recipe.data.valid_per_speaker, recipe.data.valid_max)
    if not train_items:
        raise VQAudioError("the corpus has no utterances left for training after the held-out split")
    crop = recipe.data.crop_samples
    batch_size = recipe.train.batch_size
    lengths = np.array([corpus.lengths[i] for i in train_items], dtype=np.float64)
    weights = lengths / lengths.sum()  # sample utterances in proportion to their length

    def train_batch(step: int, shard: Shard) -> Batch:
        rng = np.random.default_rng([recipe.seed, step])
        chosen = rng.choice(len(train_items), size=shard.total, p=weights)
        items = [train_items[c] for c in chosen]
        starts = [int(rng.integers(0, max(1, corpus.lengths[i] - crop + 1))) for i in items]
        return crop_batch(corpus, shard.take(items), shard.take(starts), crop)

    def valid_batches() -> Iterator[Batch]:
        for first in range(0, len(valid_items), batch_size):
            items = valid_items[first : first + batch_size]
            starts = [max(0, (corpus.lengths[i] - crop) // 2) for i in items]
            yield crop_batch(corpus, items, starts, crop)

    torch.manual_seed(recipe.seed)
    conv = recipe.model.decoder.kind == "conv"
    spectral_loss = build_spectral_loss(recipe.train, recipe.data.sample_rate) if conv else None
    model = build_audio_vqvae(recipe.model, num_speakers=len(corpus.speakers), spectral_loss=spectral_loss)
    critic = build_critic(recipe.train) if conv and recipe.train.adversarial_start is not None else None
    metadata = AudioVQVAEMetadata(
        speakers=corpus.speakers,
        speaker_info=corpus.speaker_info,
        sample_rate=recipe.data.sample_rate,
        hop=model.hop,
        codebook_size=model.codebook_size,
        n_q=model.n_q,
        ratio=model.ratio,
        top_codebook_size=model.top_codebook_size,
        train_utterances=len(train_items),
        valid_ids=[corpus.ids[i] for i in valid_items],
    )
    if critic is None:
        return TrainSetup(KIND, model, train_batch, valid_batches, metadata)

    def adversarial(model: nn.Module, config: TrainConfig) -> Optimization:
        return AdversarialStep(model, critic, config)

    return TrainSetup(KIND, model, train_batch, valid_batches, metadata, adversarial, critic)
