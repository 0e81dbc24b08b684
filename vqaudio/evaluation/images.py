"""`vqaudio eval` on an image model: bits/dim on held-out images, and originals above reconstructions.

VQ-VAE: reconstruction NLL plus log2 K bits per latent under the uniform prior, and, with a
PixelCNN prior, plus the prior's own NLL of the codes instead. VQ-VAE-2: the same with both
levels' latents, and under the hierarchy of priors the top prior's NLL of the top codes plus the
bottom prior's NLL of the bottom codes given the top. VAE: the negative ELBO (one posterior
sample per image, seeded). All are exact discrete likelihoods of the 8-bit pixels.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from vqaudio.data.images import load_image_splits
from vqaudio.inference.load import ImageModel, ImagePrior
from vqaudio.models.image_vae import gaussian_kl
from vqaudio.models.pixel_likelihood import pixel_nll, to_unit_range


@torch.no_grad()
def evaluate_images(
    model: ImageModel, prior: ImagePrior | None = None, max_images: int | None = None, batch_size: int = 100, seed: int = 0,
    bottom_prior: ImagePrior | None = None,
) -> tuple[dict[str, Any], np.ndarray]:
    """(report, [2, 8, H, W, 3] originals and reconstructions of the first 8 held-out images)."""
    _, valid = load_image_splits(model.recipe.data)
    count = min(len(valid), max_images or len(valid))
    device = next(model.model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    sums = {"nll": 0.0, "kl": 0.0, "prior": 0.0}
    dims = int(np.prod(valid.images.shape[1:]))
    shown: list[np.ndarray] = []
    latents = 0
    for first in range(0, count, batch_size):
        images = torch.from_numpy(valid.images[first : first + batch_size]).to(device)
        labels = torch.from_numpy(valid.labels[first : first + batch_size]).to(device)
        net = model.model
        if model.kind == "image_vqvae2":
            top, bottom = net.quantise(images)
            logits = net.decode_vectors(top.quantized, bottom.quantized)
            latents = top.codes[0].numel() + bottom.codes[0].numel()
            if prior is not None and bottom_prior is not None:
                top_logits = prior.model(top.codes, labels).float()
                bottom_logits = bottom_prior.model(bottom.codes, labels, top.codes).float()
                sums["prior"] += F.cross_entropy(top_logits, top.codes, reduction="sum").item()
                sums["prior"] += F.cross_entropy(bottom_logits, bottom.codes, reduction="sum").item()
        elif model.kind == "image_vqvae":
            q = net.quantizer(net.encoder(to_unit_range(images)))
            logits = net.decoder(q.quantized)
            latents = q.codes[0].numel()
            if prior is not None:
                prior_logits = prior.model(q.codes, labels).float()
                sums["prior"] += F.cross_entropy(prior_logits, q.codes, reduction="sum").item()
        else:
            mean, log_var = net.posterior(images)
            z = mean + torch.randn(mean.shape, generator=generator, device=device) * (0.5 * log_var).exp()
            logits = net.decoder(z)
            sums["kl"] += gaussian_kl(mean, log_var).sum().item()
            if len(shown) == 0:  # reconstructions from the posterior mean
                logits_shown = net.decoder(mean)
        sums["nll"] += pixel_nll(logits, images).sum().item()
        if not shown:
            recon_logits = logits_shown if model.kind == "image_vae" else logits
            recon = recon_logits[:8].argmax(dim=2).permute(0, 2, 3, 1).to(torch.uint8).cpu().numpy()
            shown = [valid.images[first : first + 8], recon]
    to_bits = 1.0 / (count * dims * math.log(2))
    report: dict[str, Any] = {
        "format": "vqaudio-image-eval",
        "version": 1,
        "checkpoint": str(model.checkpoint),
        "kind": model.kind,
        "step": model.step,
        "images": count,
        "nll_bits_per_dim": sums["nll"] * to_bits,
    }
    if model.kind in ("image_vqvae", "image_vqvae2"):
        k = model.model.codebook_size
        report["latents_per_image"] = latents
        report["bits_per_image_raw"] = latents * math.log2(k)
        report["bits_per_dim_uniform_prior"] = (sums["nll"] + count * latents * math.log(k)) * to_bits
        if prior is not None and (model.kind == "image_vqvae" or bottom_prior is not None):
            report["prior_checkpoint"] = str(prior.checkpoint)
            if bottom_prior is not None:
                report["bottom_prior_checkpoint"] = str(bottom_prior.checkpoint)
            report["prior_bits_per_code"] = sums["prior"] / (count * latents * math.log(2))
            report["bits_per_dim_learned_prior"] = (sums["nll"] + sums["prior"]) * to_bits
    else:
        report["kl_bits_per_dim"] = sums["kl"] * to_bits
        report["bits_per_dim_elbo"] = (sums["nll"] + sums["kl"]) * to_bits
    return report, np.stack(shown)
