"""The image VQ-VAE and VAE: shapes, exact likelihoods, the KL, gradients to the encoder."""

import math

import numpy as np
import pytest
import torch

from vqaudio.models.image_vae import ImageVAE, gaussian_kl
from vqaudio.models.image_vqvae import ImageVQVAE
from vqaudio.models.pixel_likelihood import bits_per_dim, pixel_nll


def images(batch: int = 4, size: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (batch, size, size, 3), dtype=np.uint8))


def test_uniform_logits_cost_exactly_8_bits_per_dim():
    x = images()
    logits = torch.zeros(4, 3, 256, 16, 16)
    nll = pixel_nll(logits, x)
    assert torch.allclose(nll, torch.full((4,), 16 * 16 * 3 * math.log(256)))
    assert bits_per_dim(nll.mean(), 16 * 16 * 3) == pytest.approx(8.0)


def test_a_confident_correct_prediction_costs_almost_nothing():
    x = images(batch=2, size=4)
    logits = torch.full((2, 3, 256, 4, 4), -30.0)
    logits.scatter_(2, x.permute(0, 3, 1, 2).long().unsqueeze(2), 30.0)
    assert float(bits_per_dim(pixel_nll(logits, x).mean(), 48)) < 1e-6


def test_gaussian_kl_matches_the_closed_form_and_a_monte_carlo_estimate():
    torch.manual_seed(0)
    mean = torch.randn(1, 3) * 0.7
    log_var = torch.randn(1, 3) * 0.5
    closed = 0.5 * (mean.pow(2) + log_var.exp() - 1 - log_var).sum()
    assert gaussian_kl(mean, log_var).item() == pytest.approx(closed.item())
    q = torch.distributions.Normal(mean, (0.5 * log_var).exp())
    z = q.sample((200_000,))
    p = torch.distributions.Normal(torch.zeros(3), torch.ones(3))
    monte_carlo = (q.log_prob(z) - p.log_prob(z)).sum(-1).mean()
    assert gaussian_kl(mean, log_var).item() == pytest.approx(monte_carlo.item(), abs=0.02)
    assert gaussian_kl(torch.zeros(2, 5), torch.zeros(2, 5)).tolist() == [0.0, 0.0]


def test_vqvae_shapes_bits_per_dim_and_gradients():
    torch.manual_seed(0)
    model = ImageVQVAE(codebook_size=16, dim=8, hidden=16, residual_blocks=1, init="data")  # seeded from this batch
    x = images(batch=3, size=32)
    chosen = []
    hook = model.quantizer.register_forward_hook(lambda module, inputs, out: chosen.append(out.codes))
    loss, metrics = model.training_step({"images": x})
    hook.remove()
    (before,) = chosen  # the codes the training step chose
    loss.backward()
    assert model.encoder.net[0].weight.grad.abs().sum() > 0  # straight through to the encoder
    # Usage counts the codes of this batch exactly.
    assert torch.equal(metrics["code_counts"], torch.bincount(before.flatten(), minlength=16).float())
    used = ImageVQVAE.summarize_metrics(metrics)["codes_used"]
    assert used == before.unique().numel() and used > 8  # a codebook seeded from this batch: most codes chosen
    codes = model.encode(x)
    assert codes.shape == (3, 8, 8) and int(codes.max()) < 16
    out = model.decode(codes)
    assert out.shape == (3, 32, 32, 3) and out.dtype == torch.uint8
    # Bits per dim against a known answer: a decoder that predicts uniform logits costs exactly
    # 8 bits per sub-pixel, and the uniform prior adds log2 16 = 4 bits for each of the 64 latents,
    # spread over 32 * 32 * 3 = 3072 sub-pixels: 1/12 bit per dim.
    with torch.no_grad():
        model.decoder.net[-1].weight.zero_()
        model.decoder.net[-1].bias.zero_()
    _, uniform = model.training_step({"images": x})
    assert float(uniform["nll_bits_per_dim"]) == pytest.approx(8.0, abs=1e-6)
    assert float(uniform["bits_per_dim"]) == pytest.approx(8.0 + 1 / 12, abs=1e-6)


def test_vae_shapes_elbo_and_gradients():
    torch.manual_seed(0)
    model = ImageVAE(dim=8, hidden=16, residual_blocks=1)
    x = images(batch=2, size=32)
    mean, log_var = model.posterior(x)
    assert mean.shape == log_var.shape == (2, 8, 8, 8)
    loss, metrics = model.training_step({"images": x})
    loss.backward()
    assert model.encoder.net[0].weight.grad.abs().sum() > 0
    total = metrics["nll_bits_per_dim"] + metrics["kl_bits_per_dim"]
    assert float(metrics["bits_per_dim"]) == pytest.approx(float(total), rel=1e-5)
    assert float(metrics["kl_bits_per_dim"]) > 0
