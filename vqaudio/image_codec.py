"""A trained image model (VQ-VAE or VAE) rebuilt from its checkpoint, and its PixelCNN prior."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vqaudio.errors import VQAudioError
from vqaudio.models.pixelcnn import GatedPixelCNN
from vqaudio.models.pixelcnn_sampling import draw_codes, sample_pixelcnn
from vqaudio.recipe import Recipe, validate_recipe
from vqaudio.train.checkpoint import load_checkpoint


@dataclass
class LoadedModel:
    model: Any
    kind: str
    recipe: Recipe
    metadata: dict[str, Any]
    checkpoint: Path
    fingerprint: str
    step: int

    @property
    def class_names(self) -> list[str]:
        return list(self.metadata.get("class_names", []))

    def label_index(self, label: str | int | None) -> int:
        """A class index ('3') or name ('cat'); None means 0."""
        names = self.class_names
        if label is None:
            return 0
        text = str(label)
        if text in names:
            return names.index(text)
        if text.isdigit() and int(text) < len(names):
            return int(text)
        raise VQAudioError(f"--label {text!r}: not a class of this model ({', '.join(names)})")


def _load(checkpoint: str | Path, kinds: tuple[str, ...], device: torch.device) -> tuple[dict[str, Any], Recipe]:
    payload = load_checkpoint(checkpoint)
    if payload.get("kind") not in kinds:
        raise VQAudioError(f"{checkpoint}: holds a {payload.get('kind')} model, not {' or '.join(kinds)}")
    return payload, validate_recipe(payload["recipe"], f"{checkpoint} (embedded recipe)")


def _restore(model: torch.nn.Module, payload: dict[str, Any], checkpoint: str | Path, device: torch.device) -> None:
    try:
        model.load_state_dict(payload["model"])
    except RuntimeError as exc:
        raise VQAudioError(f"{checkpoint}: weights do not fit the recipe stored with them ({str(exc).splitlines()[0]})") from None
    model.to(device).eval()


def load_image_model(checkpoint: str | Path, device: torch.device) -> LoadedModel:
    from vqaudio.tasks.image_models import build_image_model

    payload, recipe = _load(checkpoint, ("image_vqvae", "image_vae", "image_vqvae2"), device)
    model = build_image_model(recipe.model)
    _restore(model, payload, checkpoint, device)
    return LoadedModel(model, payload["kind"], recipe, payload.get("metadata") or {}, Path(checkpoint),
                       payload["fingerprint"], int(payload["step"]))  # fmt: skip


def build_pixelcnn(recipe: Recipe, num_codes: int, num_classes: int, conditioned: bool = False, scale: int = 1) -> GatedPixelCNN:
    """The prior a recipe describes; `conditioned`: on top codes at 1/`scale` of the map's side."""
    assert recipe.prior is not None
    p = recipe.prior
    return GatedPixelCNN(
        num_codes, p.residual_channels, p.layers, p.kernel_size, num_classes,
        attention_every=p.attention_every, heads=p.heads, dropout=p.dropout,
        condition_codes=num_codes if conditioned else 0, condition_blocks=p.condition_blocks, condition_scale=scale,
    )  # fmt: skip


@dataclass
class ImagePrior:
    prior: LoadedModel  # the PixelCNN
    vqvae: LoadedModel

    @property
    def level(self) -> str | None:
        """None over a one-level VQ-VAE; "top" or "bottom" over a VQ-VAE-2."""
        return self.prior.metadata.get("level")


def load_image_prior(checkpoint: str | Path, device: torch.device, vqvae: str | Path | None = None) -> ImagePrior:
    payload, recipe = _load(checkpoint, ("image_prior",), device)
    meta = payload.get("metadata") or {}
    vq_path = Path(vqvae or meta.get("vqvae_checkpoint", ""))
    if not vq_path.is_file():
        raise VQAudioError(f"{checkpoint}: its VQ-VAE {vq_path} is gone; pass --vqvae with that model's checkpoint")
    vq = load_image_model(vq_path, device)
    if vq.fingerprint != meta.get("vqvae_fingerprint"):
        raise VQAudioError(f"{vq_path} is not the VQ-VAE {checkpoint} was trained on; pass --vqvae with that checkpoint")
    from vqaudio.tasks.image_prior import PixelCNNPrior

    shape, top = meta.get("code_shape") or [1, 1], meta.get("condition_shape")
    scale = shape[0] // top[0] if top else 1
    wrapper = PixelCNNPrior(build_pixelcnn(recipe, vq.model.codebook_size, len(vq.class_names), top is not None, scale))
    _restore(wrapper, payload, checkpoint, device)
    loaded = LoadedModel(wrapper.net, "image_prior", recipe, meta, Path(checkpoint), payload["fingerprint"], int(payload["step"]))
    return ImagePrior(loaded, vq)


def sample_image_codes(
    prior: GatedPixelCNN, labels: torch.Tensor, height: int, width: int, temperature: float = 1.0,
    generator: torch.Generator | None = None, condition: torch.Tensor | None = None,
    on_row: Callable[[int], None] | None = None,
) -> torch.Tensor:  # fmt: skip
    """Codes [B, height, width] drawn in raster order with cached computation (one column of work
    per position; see vqaudio.models.pixelcnn_sampling)."""
    codes, _ = sample_pixelcnn(prior, labels, height, width, condition, temperature, generator, on_row)
    return codes


@torch.no_grad()
def sample_image_codes_full(
    prior: GatedPixelCNN, labels: torch.Tensor, height: int, width: int, temperature: float = 1.0,
    generator: torch.Generator | None = None, condition: torch.Tensor | None = None,
) -> torch.Tensor:  # fmt: skip
    """The reference sampler: a full forward pass per position (height * width passes). Kept to
    check the cached sampler and to time it against."""
    codes = torch.zeros(labels.shape[0], height, width, dtype=torch.long, device=labels.device)
    for i in range(height):
        for j in range(width):
            codes[:, i, j] = draw_codes(prior(codes, labels, condition)[:, :, i, j].float(), temperature, generator)
    return codes


def find_bottom_prior(top: ImagePrior, runs_dir: Path | None = None) -> Path:
    """The newest bottom prior trained over the same VQ-VAE-2 as `top`, under `runs_dir` (by
    default the runs folder the top prior's run sits in: runs/<name>/<run>/checkpoints/)."""
    from vqaudio.train.run_dir import newest_prior_at_level, runs_dir_of

    runs_dir = runs_dir or runs_dir_of(top.prior.checkpoint)
    found = newest_prior_at_level(runs_dir, "image_prior", "bottom", top.vqvae.fingerprint)
    if found is None:
        raise VQAudioError(
            f"{top.prior.checkpoint} is a top prior: no bottom prior over its VQ-VAE-2 under {runs_dir}/; "
            "train one (prior.level=bottom) or pass --bottom"
        )
    return found


def load_prior_pair(checkpoint: str | Path, device: torch.device, bottom: str | Path | None = None,
                    vqvae: str | Path | None = None) -> tuple[ImagePrior, ImagePrior | None]:  # fmt: skip
    """An image prior, and for a VQ-VAE-2's top prior its bottom partner (given or the newest)."""
    from vqaudio.train.run_dir import needs_bottom_prior

    first = load_image_prior(checkpoint, device, vqvae)
    if not needs_bottom_prior(checkpoint, first.level, bottom):
        return first, None
    second = load_image_prior(bottom or find_bottom_prior(first), device, vqvae)
    if second.level != "bottom" or second.vqvae.fingerprint != first.vqvae.fingerprint:
        raise VQAudioError(f"{second.prior.checkpoint}: not a bottom prior over {first.vqvae.checkpoint}")
    return first, second


@torch.no_grad()
def sample_images(
    first: ImagePrior, second: ImagePrior | None, labels: torch.Tensor, temperature: float = 1.0,
    generator: torch.Generator | None = None, on_row: Callable[[int], None] | None = None,
) -> np.ndarray:  # fmt: skip
    """Images uint8 [B, H, W, 3]: codes drawn from the prior (top, then bottom given the top, for a
    VQ-VAE-2) and decoded. `on_row` counts rows drawn over both levels."""
    height, width = first.prior.metadata["code_shape"]
    codes = sample_image_codes(first.prior.model, labels, height, width, temperature, generator, on_row=on_row)
    if second is None:
        return first.vqvae.model.decode(codes).cpu().numpy()
    done = height
    bottom_h, bottom_w = second.prior.metadata["code_shape"]
    bottom = sample_image_codes(second.prior.model, labels, bottom_h, bottom_w, temperature, generator, condition=codes,
                                on_row=(lambda row: on_row(done + row)) if on_row else None)  # fmt: skip
    return first.vqvae.model.decode(codes, bottom).cpu().numpy()


def sample_rows(first: ImagePrior, second: ImagePrior | None) -> int:
    """Rows `sample_images` draws (for a progress bar)."""
    return first.prior.metadata["code_shape"][0] + (second.prior.metadata["code_shape"][0] if second else 0)
