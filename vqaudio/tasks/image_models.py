"""Training the image VQ-VAE or the VAE baseline: random training images in, held-out images for validation."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from vqaudio.data.corpus import ProgressFn
from vqaudio.data.images import ImageSet, load_cifar10, load_image_folder
from vqaudio.errors import VQAudioError
from vqaudio.models.image_vae import ImageVAE
from vqaudio.models.image_vqvae import ImageVQVAE
from vqaudio.models.image_vqvae2 import ImageVQVAE2
from vqaudio.recipe import DataConfig, ModelConfig, Recipe
from vqaudio.train.trainer import Batch, Shard, TrainSetup


def load_image_splits(config: DataConfig) -> tuple[ImageSet, ImageSet]:
    """(train, held-out): CIFAR-10's own test batch, or every tenth image of a folder (by position)."""
    root = Path(config.root or "")
    if config.kind == "cifar10":
        return load_cifar10(root, "train"), load_cifar10(root, "test")
    images = load_image_folder(root, config.image_size)
    held = np.zeros(len(images), dtype=bool)
    held[::10] = True
    if held.all():
        raise VQAudioError(f"{root}: too few images to hold any out for validation (found {len(images)})")
    pick = lambda mask: ImageSet(images.images[mask], images.labels[mask], images.class_names)  # noqa: E731
    return pick(~held), pick(held)


def build_image_model(config: ModelConfig) -> ImageVQVAE | ImageVAE | ImageVQVAE2:
    net = config.image
    if config.kind == "image_vae":
        return ImageVAE(net.vae_dim, net.hidden, net.residual_blocks)
    q = config.quantizer
    if q.n_q != 1:
        raise VQAudioError(f"model.quantizer.n_q: the {config.kind} uses one codebook per level")
    options = dict(
        beta=q.beta, update=q.update, decay=q.decay, epsilon=q.epsilon, init=q.init, init_batches=q.init_batches,
        kmeans_iters=q.kmeans_iters, restart_threshold=q.restart_threshold, usage_decay=q.usage_decay,
        bias_correction=q.bias_correction, cosine=q.cosine,
    )  # fmt: skip
    model = ImageVQVAE2 if config.kind == "image_vqvae2" else ImageVQVAE
    return model(q.codebook_size, q.dim, net.hidden, net.residual_blocks, **options)


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
    metadata = {
        "class_names": train.class_names,
        "image_shape": list(train.images.shape[1:]),
        "train_images": len(train),
        "valid_images": valid_count,
    }
    return TrainSetup(recipe.model.kind, model, train_batch, valid_batches, metadata)
