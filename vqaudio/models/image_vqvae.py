"""The paper's image VQ-VAE: 32x32x3 images -> 8x8 codes (K = 512) -> a 256-way softmax per sub-pixel.

Under the uniform prior used in training, an image costs its reconstruction NLL plus log K nats
per latent, so bits/dim = (NLL + latents * ln K) / (3 * H * W * ln 2) is an honest bound.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from vqaudio.models.image_nets import ImageDecoder, ImageEncoder
from vqaudio.models.pixel_likelihood import bits_per_dim, pixel_nll, to_unit_range
from vqaudio.models.quantizer import VectorQuantizer, usage_stats


class ImageVQVAE(nn.Module):
    def __init__(self, codebook_size: int = 512, dim: int = 64, hidden: int = 256, residual_blocks: int = 2,
                 **quantizer: Any) -> None:  # fmt: skip
        super().__init__()
        self.encoder = ImageEncoder(dim, hidden, residual_blocks)
        self.quantizer = VectorQuantizer(codebook_size, dim, **quantizer)
        self.decoder = ImageDecoder(dim, hidden, residual_blocks)

    @property
    def codebook_size(self) -> int:
        return self.quantizer.codebook_size

    def training_step(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        images = batch["images"]
        q = self.quantizer(self.encoder(to_unit_range(images)))
        nll = pixel_nll(self.decoder(q.quantized), images)  # nats per image
        dims = images[0].numel()
        latents = q.codes[0].numel()
        loss = nll.mean() / dims + q.loss
        uniform = (nll + latents * math.log(self.codebook_size)).mean()
        return loss, {
            "loss": loss.detach(),
            "nll_bits_per_dim": bits_per_dim(nll.mean().detach(), dims),
            "bits_per_dim": bits_per_dim(uniform.detach(), dims),
            "commitment": q.commitment_loss.detach(),
            "code_counts": q.counts.detach(),
        }

    @staticmethod
    def summarize_metrics(values: dict[str, torch.Tensor | float]) -> dict[str, float]:
        result = {k: float(v) for k, v in values.items() if k != "code_counts"}
        if "code_counts" in values:
            result.update(usage_stats(torch.as_tensor(values["code_counts"])))
        return result

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 images [B, H, W, 3] -> codes [B, H / 4, W / 4]."""
        return self.quantizer(self.encoder(to_unit_range(images))).codes

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes [B, h, w] -> the most likely image, uint8 [B, 4h, 4w, 3]."""
        return self.decoder(self.quantizer.lookup(codes)).argmax(dim=2).permute(0, 2, 3, 1).to(torch.uint8)
