"""The VAE baseline of the paper's image comparison: the same encoder and decoder as the VQ-VAE,
a diagonal Gaussian posterior over continuous 8x8xD latents, the reparameterisation trick, and
KL to N(0, I). bits/dim = (reconstruction NLL + KL) / (dims * ln 2), the negative ELBO.
"""

from __future__ import annotations

import torch
from torch import nn

from vqaudio.models.image_nets import ImageDecoder, ImageEncoder
from vqaudio.models.pixel_likelihood import bits_per_dim, pixel_nll, to_unit_range


def gaussian_kl(mean: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(log_var)) || N(0, I)) in nats, summed over all but the first dimension."""
    kl = 0.5 * (mean.pow(2) + log_var.exp() - 1.0 - log_var)
    return kl.flatten(1).sum(dim=1)


class ImageVAE(nn.Module):
    def __init__(self, dim: int = 64, hidden: int = 256, residual_blocks: int = 2) -> None:
        super().__init__()
        self.encoder = ImageEncoder(2 * dim, hidden, residual_blocks)
        self.decoder = ImageDecoder(dim, hidden, residual_blocks)

    def posterior(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, log variance) of q(z | x), each [B, D, H / 4, W / 4]."""
        mean, log_var = self.encoder(to_unit_range(images)).chunk(2, dim=1)
        return mean, log_var.clamp(-30.0, 20.0)

    def training_step(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        images = batch["images"]
        mean, log_var = self.posterior(images)
        z = mean + torch.randn_like(mean) * (0.5 * log_var).exp()  # reparameterisation
        nll = pixel_nll(self.decoder(z), images)
        kl = gaussian_kl(mean, log_var)
        dims = images[0].numel()
        elbo_nats = (nll + kl).mean()
        loss = elbo_nats / dims
        return loss, {
            "loss": loss.detach(),
            "nll_bits_per_dim": bits_per_dim(nll.mean().detach(), dims),
            "kl_bits_per_dim": bits_per_dim(kl.mean().detach(), dims),
            "bits_per_dim": bits_per_dim(elbo_nats.detach(), dims),
        }
