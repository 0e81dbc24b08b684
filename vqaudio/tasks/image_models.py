"""Training the image VQ-VAE or the VAE baseline: random training images in, held-out images for validation."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from vqaudio.data.corpus import ProgressFn
from vqaudio.data.images import ImageSet, load_image_splits
from vqaudio.errors import VQAudioError
from vqaudio.formats.metadata import ImageModelMetadata
from vqaudio.models.build import build_image_model
from vqaudio.recipe import Recipe
from vqaudio.train.setup import Batch, Shard, TrainSetup


def image_batch(images: ImageSet, items: np.ndarray) -> Batch:
    return {"images": torch.from_numpy(images.images[items]), "labels": torch.from_numpy(images.labels[items])}


def build_image_task(recipe: Recipe, on_progress: ProgressFn | None = None) -> TrainSetup:
    train, valid = load_image_splits(recipe.data)
    factor = 8 if recipe.model.kind == "image_vqvae2" else 4  # VQ-VAE-2's top map is at 1/8 of the side
    if train.images.shape[1] % factor or train.images.shape[2] % factor:
        raise VQAudioError(
            f"images are {train.images.shape[2]}x{train.images.shape[1]}; a {recipe.model.kind} needs sides that are "
            f"multiples of {factor} (set data.image_size)"
        )
    valid_count = min(len(valid), recipe.data.valid_images)
    batch_size = recipe.train.batch_size

    def train_batch(step: int, shard: Shard) -> Batch:
        rng = np.random.default_rng([recipe.seed, step])
        return image_batch(train, shard.take(rng.integers(0, len(train), shard.total)))

    def valid_batches() -> Iterator[Batch]:
        for first in range(0, valid_count, batch_size):
            yield image_batch(valid, np.arange(first, min(valid_count, first + batch_size)))

    torch.manual_seed(recipe.seed)
    model = build_image_model(recipe.model)
    metadata = ImageModelMetadata(
        class_names=train.class_names,
        image_shape=list(train.images.shape[1:]),
        train_images=len(train),
        valid_images=valid_count,
    )
    return TrainSetup(recipe.model.kind, model, train_batch, valid_batches, metadata)
