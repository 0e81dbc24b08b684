"""Tasks wire a recipe to the training loop: which data, which model, which batches."""

from __future__ import annotations

from vqaudio.data.corpus import ProgressFn
from vqaudio.errors import VQAudioError
from vqaudio.recipe import Recipe
from vqaudio.train.setup import TrainSetup


def build_setup(recipe: Recipe, on_progress: ProgressFn | None = None) -> TrainSetup:
    """The TrainSetup for the recipe's `model.kind`."""
    if recipe.model.kind == "audio_vqvae":
        from vqaudio.tasks.audio_vqvae import build_audio_vqvae_task

        return build_audio_vqvae_task(recipe, on_progress)
    if recipe.model.kind == "code_prior":
        from vqaudio.tasks.code_prior import build_code_prior_task

        return build_code_prior_task(recipe, on_progress)
    if recipe.model.kind in ("image_vqvae", "image_vae", "image_vqvae2"):
        from vqaudio.tasks.image_models import build_image_task

        return build_image_task(recipe, on_progress)
    if recipe.model.kind == "image_prior":
        from vqaudio.tasks.image_prior import build_image_prior

        return build_image_prior(recipe, on_progress)
    raise VQAudioError(f"model.kind {recipe.model.kind!r} has no training task")
