"""VQ-VAE-2 for images (Razavi et al. 2019): a top code map at 1/8 of the image side for global
structure and a bottom map at 1/4 for local detail.

The bottom encoder is conditioned on the top, as in the paper: the image is encoded to bottom
features (stride 4), those are encoded further to the top latents (stride 2) and quantised; the
quantised top is decoded back to the bottom resolution and joined with the bottom features
before the bottom latents are quantised. The decoder takes both levels (the top upsampled) and
gives a 256-way softmax per sub-pixel, so likelihoods, and bits/dim, are exact.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from vqaudio.models.image_nets import ImageDecoder, ResidualBlock2d
from vqaudio.models.pixel_likelihood import bits_per_dim, pixel_nll, to_unit_range
from vqaudio.models.quantizer import VectorQuantizer, usage_stats


def _stack(first: nn.Module, hidden: int, residual_blocks: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        first, *[ResidualBlock2d(hidden) for _ in range(residual_blocks)], nn.ReLU(), nn.Conv2d(hidden, out_channels, 1)
    )


class ImageVQVAE2(nn.Module):
    def __init__(self, codebook_size: int = 512, dim: int = 64, hidden: int = 128, residual_blocks: int = 2,
                 **quantizer: Any) -> None:  # fmt: skip
        super().__init__()
        self.dim = dim
        # image -> bottom features (stride 4)
        self.encode_bottom = nn.Sequential(
            nn.Conv2d(3, hidden, 4, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(hidden, hidden, 4, stride=2, padding=1),
            *[ResidualBlock2d(hidden) for _ in range(residual_blocks)], nn.ReLU(),
        )  # fmt: skip
        # bottom features -> top latents (stride 2 more)
        self.encode_top = _stack(nn.Conv2d(hidden, hidden, 4, stride=2, padding=1), hidden, residual_blocks, dim)
        self.quantize_top = VectorQuantizer(codebook_size, dim, **quantizer)
        # quantised top -> bottom resolution, to condition the bottom latents
        self.top_to_bottom = nn.Sequential(
            nn.Conv2d(dim, hidden, 3, padding=1), *[ResidualBlock2d(hidden) for _ in range(residual_blocks)], nn.ReLU(),
            nn.ConvTranspose2d(hidden, dim, 4, stride=2, padding=1),
        )  # fmt: skip
        self.bottom_latents = nn.Conv2d(hidden + dim, dim, 1)
        self.quantize_bottom = VectorQuantizer(codebook_size, dim, **quantizer)
        # decoder: both levels (the top upsampled) -> pixels
        self.upsample_top = nn.ConvTranspose2d(dim, dim, 4, stride=2, padding=1)
        self.decoder = ImageDecoder(2 * dim, hidden, residual_blocks)

    @property
    def codebook_size(self) -> int:
        return self.quantize_bottom.codebook_size

    def quantise(self, images: torch.Tensor) -> tuple[Any, Any]:
        features = self.encode_bottom(to_unit_range(images))
        top = self.quantize_top(self.encode_top(features))
        bottom = self.quantize_bottom(self.bottom_latents(torch.cat([features, self.top_to_bottom(top.quantized)], 1)))
        return top, bottom

    def decode_vectors(self, top: torch.Tensor, bottom: torch.Tensor) -> torch.Tensor:
        return self.decoder(torch.cat([bottom, self.upsample_top(top)], 1))

    def training_step(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        images = batch["images"]
        top, bottom = self.quantise(images)
        nll = pixel_nll(self.decode_vectors(top.quantized, bottom.quantized), images)  # nats per image
        dims = images[0].numel()
        latents = top.codes[0].numel() + bottom.codes[0].numel()
        loss = nll.mean() / dims + top.loss + bottom.loss
        uniform = (nll + latents * math.log(self.codebook_size)).mean()
        return loss, {
            "loss": loss.detach(),
            "nll_bits_per_dim": bits_per_dim(nll.mean().detach(), dims),
            "bits_per_dim": bits_per_dim(uniform.detach(), dims),
            "commitment": (top.commitment_loss + bottom.commitment_loss).detach(),
            "code_counts": bottom.counts.detach(),
            "top_code_counts": top.counts.detach(),
        }

    @staticmethod
    def summarize_metrics(values: dict[str, torch.Tensor | float]) -> dict[str, float]:
        result = {k: float(v) for k, v in values.items() if not k.endswith("code_counts")}
        if "code_counts" in values:
            result.update(usage_stats(torch.as_tensor(values["code_counts"])))
        if "top_code_counts" in values:
            result.update({f"top_{k}": v for k, v in usage_stats(torch.as_tensor(values["top_code_counts"])).items()})
        return result

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 images [B, H, W, 3] -> (top codes [B, H/8, W/8], bottom codes [B, H/4, W/4])."""
        top, bottom = self.quantise(images)
        return top.codes, bottom.codes

    @torch.no_grad()
    def decode(self, top: torch.Tensor, bottom: torch.Tensor) -> torch.Tensor:
        """Both code maps -> the most likely image, uint8 [B, 4h, 4w, 3]."""
        logits = self.decode_vectors(self.quantize_top.lookup(top), self.quantize_bottom.lookup(bottom))
        return logits.argmax(dim=2).permute(0, 2, 3, 1).to(torch.uint8)

    @torch.no_grad()
    def image_nll(self, images: torch.Tensor, top: torch.Tensor, bottom: torch.Tensor) -> torch.Tensor:
        """-log p(image | codes) in nats, [B]: with the priors' code costs, the hierarchy's bits/dim."""
        logits = self.decode_vectors(self.quantize_top.lookup(top), self.quantize_bottom.lookup(bottom))
        return pixel_nll(logits, images)
