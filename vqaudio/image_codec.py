"""A trained image model (VQ-VAE or VAE) rebuilt from its checkpoint, and its PixelCNN prior."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from vqaudio.errors import VQAudioError
from vqaudio.models.pixelcnn import GatedPixelCNN
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

    payload, recipe = _load(checkpoint, ("image_vqvae", "image_vae"), device)
    model = build_image_model(recipe.model)
    _restore(model, payload, checkpoint, device)
    return LoadedModel(model, payload["kind"], recipe, payload.get("metadata") or {}, Path(checkpoint),
                       payload["fingerprint"], int(payload["step"]))  # fmt: skip


def build_pixelcnn(recipe: Recipe, num_codes: int, num_classes: int) -> GatedPixelCNN:
    assert recipe.prior is not None
    p = recipe.prior
    return GatedPixelCNN(num_codes, p.residual_channels, p.layers, p.kernel_size, num_classes)


@dataclass
class ImagePrior:
    prior: LoadedModel  # the PixelCNN
    vqvae: LoadedModel


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

    wrapper = PixelCNNPrior(build_pixelcnn(recipe, vq.model.codebook_size, len(vq.class_names)))
    _restore(wrapper, payload, checkpoint, device)
    loaded = LoadedModel(wrapper.net, "image_prior", recipe, meta, Path(checkpoint), payload["fingerprint"], int(payload["step"]))
    return ImagePrior(loaded, vq)


@torch.no_grad()
def sample_image_codes(
    prior: GatedPixelCNN, labels: torch.Tensor, height: int, width: int, temperature: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:  # fmt: skip
    """Codes [B, height, width] drawn position by position in raster order (an 8x8 map is 64 passes)."""
    codes = torch.zeros(labels.shape[0], height, width, dtype=torch.long, device=labels.device)
    for i in range(height):
        for j in range(width):
            logits = prior(codes, labels)[:, :, i, j].float()
            if temperature <= 0:
                codes[:, i, j] = logits.argmax(dim=1)
            else:
                probs = torch.softmax(logits / temperature, dim=1).cpu()
                codes[:, i, j] = torch.multinomial(probs, 1, generator=generator)[:, 0].to(labels.device)
    return codes
