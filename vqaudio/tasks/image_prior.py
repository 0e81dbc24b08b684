"""Training the gated PixelCNN prior over an image VQ-VAE's code maps, conditioned on the class.

Over a VQ-VAE-2 (prior.level) there are two priors: the top one over the top maps, and the
bottom one over the bottom maps, conditioned on the top maps through a residual stack."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch import nn

from vqaudio.data.corpus import ProgressFn
from vqaudio.data.images import load_image_splits
from vqaudio.errors import VQAudioError
from vqaudio.fileio import atomic_output
from vqaudio.formats.checkpoint import Checkpoint, read_checkpoint
from vqaudio.formats.metadata import ImageModelMetadata, ImagePriorMetadata
from vqaudio.models.build import build_model, build_pixelcnn
from vqaudio.models.modes import evaluating
from vqaudio.recipe import ImagePriorRecipe, Recipe
from vqaudio.tasks.code_prior import resolve_vqvae
from vqaudio.train.setup import Batch, Shard, TrainSetup

KIND = "image_prior"


def image_code_maps(model: nn.Module, vq: Checkpoint, on_progress: ProgressFn | None = None) -> dict[str, np.ndarray]:
    """Code maps and labels of the training and held-out images of the VQ-VAE in `vq` (built as
    `model`), cached beside its run. The model is not changed."""
    folder = vq.path.resolve().parent
    folder = folder.parent if folder.name == "checkpoints" else folder
    cache = folder / "codes" / f"{vq.fingerprint}-images.npz"
    if cache.exists():
        with np.load(cache, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    train, valid = load_image_splits(vq.recipe.data)
    arrays: dict[str, np.ndarray] = {}
    for name, images in (("train", train), ("valid", valid)):
        pieces: dict[str, list[np.ndarray]] = {"codes": [], "top": []}
        for first in range(0, len(images), 256):
            with evaluating(model):
                encoded = model.encode(torch.from_numpy(images.images[first : first + 256]))
            if isinstance(encoded, tuple):  # VQ-VAE-2: (top, bottom)
                pieces["top"].append(encoded[0].cpu().numpy().astype(np.int16))
                encoded = encoded[1]
            pieces["codes"].append(encoded.cpu().numpy().astype(np.int16))
            if on_progress:
                on_progress(min(len(images), first + 256), len(images))
        arrays.update({f"{name}_{key}": np.concatenate(parts) for key, parts in pieces.items() if parts})
        arrays[f"{name}_labels"] = images.labels
    cache.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(cache) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, **arrays)
    return arrays


def build_image_prior(recipe: Recipe, on_progress: ProgressFn | None = None) -> TrainSetup:
    assert isinstance(recipe, ImagePriorRecipe)
    level = recipe.prior.level
    wanted = "image_vqvae2" if level else "image_vqvae"
    checkpoint = resolve_vqvae(recipe.prior.vqvae, Path(recipe.train.runs_dir), kind=wanted)
    vq = read_checkpoint(checkpoint)
    if vq.kind == "image_vae":
        raise VQAudioError(f"{checkpoint}: an image_vae has no codes; a PixelCNN prior needs an image VQ-VAE")
    if vq.kind != wanted:
        hint = "set prior.level to top or bottom" if vq.kind == "image_vqvae2" else "remove prior.level"
        raise VQAudioError(f"{checkpoint}: a {vq.kind}, so {hint}")
    vq_model, vq_meta = build_model(vq), vq.metadata
    assert isinstance(vq_meta, ImageModelMetadata)
    maps = image_code_maps(vq_model, vq, on_progress)
    key = "top" if level == "top" else "codes"
    train_codes, train_labels = maps[f"train_{key}"], maps["train_labels"]
    conditioned = level == "bottom"
    valid_count = min(len(maps["valid_labels"]), vq.recipe.data.valid_images)
    batch_size = recipe.train.batch_size

    def batch_of(split: str, items: np.ndarray | slice) -> Batch:
        batch = {
            "codes": torch.from_numpy(maps[f"{split}_{key}"][items].astype(np.int64)),
            "labels": torch.from_numpy(maps[f"{split}_labels"][items].astype(np.int64)),
        }
        if conditioned:
            batch["condition"] = torch.from_numpy(maps[f"{split}_top"][items].astype(np.int64))
        return batch

    def train_batch(step: int, shard: Shard) -> Batch:
        return batch_of("train", shard.take(np.random.default_rng([recipe.seed, step]).integers(0, len(train_labels), shard.total)))

    def valid_batches() -> Iterator[Batch]:
        for first in range(0, valid_count, batch_size):
            yield batch_of("valid", slice(first, min(valid_count, first + batch_size)))

    torch.manual_seed(recipe.seed)
    top_shape = list(maps["train_top"].shape[1:]) if conditioned else None
    scale = train_codes.shape[1] // top_shape[0] if top_shape else 1
    model = build_pixelcnn(recipe.prior, vq_model.codebook_size, len(vq_meta.class_names), conditioned, scale)
    metadata = ImagePriorMetadata(
        class_names=vq_meta.class_names,
        code_shape=list(train_codes.shape[1:]),
        level=level,
        condition_shape=top_shape,
        codebook_size=vq_model.codebook_size,
        image_shape=vq_meta.image_shape,
        vqvae_checkpoint=str(checkpoint.resolve()),
        vqvae_fingerprint=vq.fingerprint,
        valid_images=valid_count,
    )
    return TrainSetup(KIND, model, train_batch, valid_batches, metadata)
