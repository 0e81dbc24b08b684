import math

import pytest
import torch

from vqaudio.models.quantizer import VectorQuantizer


def test_codes_are_the_nearest_entries():
    torch.manual_seed(0)
    vq = VectorQuantizer(16, 4, init="random").eval()
    z = torch.randn(3, 4, 10)
    out = vq(z)
    flat = z.permute(0, 2, 1).reshape(-1, 4)
    brute = torch.cdist(flat, vq.codebook).argmin(1).view(3, 10)
    assert out.codes.shape == (3, 10)
    assert torch.equal(out.codes, brute)
    assert torch.allclose(out.quantized, vq.codebook[brute].permute(0, 2, 1))


def test_two_dimensional_latents_keep_their_layout():
    vq = VectorQuantizer(8, 3, init="random").eval()
    z = torch.randn(2, 3, 4, 5)
    out = vq(z)
    assert out.codes.shape == (2, 4, 5)
    assert out.quantized.shape == z.shape
    assert torch.allclose(out.quantized[1, :, 2, 3], vq.codebook[out.codes[1, 2, 3]])


def test_ema_update_matches_hand_computation():
    vq = VectorQuantizer(2, 1, update="ema", decay=0.5, epsilon=0.0, init="random")
    vq.codebook.copy_(torch.tensor([[0.0], [10.0]]))
    vq.ema_sum.copy_(vq.codebook)
    vq.ema_count.fill_(1.0)
    z = torch.tensor([[[1.0, 3.0, 9.0]]])  # [B=1, D=1, T=3]: 1 and 3 go to code 0, 9 to code 1
    out = vq(z)
    assert out.codes.tolist() == [[0, 0, 1]]
    # counts: 0.5*1 + 0.5*2 = 1.5 and 0.5*1 + 0.5*1 = 1.0
    assert torch.allclose(vq.ema_count, torch.tensor([1.5, 1.0]))
    # sums: 0.5*0 + 0.5*(1+3) = 2 and 0.5*10 + 0.5*9 = 9.5
    assert torch.allclose(vq.ema_sum, torch.tensor([[2.0], [9.5]]))
    # with epsilon 0 Laplace smoothing leaves the counts, so codes are sum / count
    assert torch.allclose(vq.codebook, torch.tensor([[2.0 / 1.5], [9.5]]))


def test_laplace_smoothing_keeps_an_unused_code_finite():
    vq = VectorQuantizer(3, 2, decay=0.99, epsilon=1e-5, init="random")
    vq.codebook.copy_(torch.tensor([[0.0, 0.0], [1.0, 1.0], [100.0, 100.0]]))
    vq.ema_sum.copy_(vq.codebook)
    for _ in range(200):
        vq(torch.randn(4, 2, 8) * 0.1)
    assert torch.isfinite(vq.codebook).all()
    assert vq.codebook[2].abs().max() < 1000


def test_gradient_reaches_the_input_straight_through():
    vq = VectorQuantizer(8, 4, init="random")
    encoder = torch.nn.Conv1d(1, 4, 3, padding=1)
    x = torch.randn(2, 1, 16)
    out = vq(encoder(x))
    (out.quantized.pow(2).sum() + out.loss).backward()
    assert encoder.weight.grad is not None and encoder.weight.grad.abs().sum() > 0


def test_with_ema_the_optimiser_never_touches_the_codebook():
    torch.manual_seed(0)
    vq = VectorQuantizer(8, 4, update="ema", init="random")
    assert not any(p is vq.codebook for p in vq.parameters())
    encoder = torch.nn.Conv1d(1, 4, 3, padding=1)
    optimiser = torch.optim.SGD([*encoder.parameters(), *vq.parameters()], lr=1.0)
    vq.eval()  # no EMA step either, so any change would be the optimiser's
    before = vq.codebook.clone()
    out = vq(encoder(torch.randn(2, 1, 16)))
    (out.quantized.sum() + out.loss).backward()
    optimiser.step()
    assert torch.equal(vq.codebook, before)


def test_loss_mode_trains_the_codebook_by_gradient():
    vq = VectorQuantizer(8, 4, update="loss", init="random")
    assert any(p is vq.codebook for p in vq.parameters())
    out = vq(torch.randn(2, 4, 16))
    out.loss.backward()
    assert vq.codebook.grad is not None and vq.codebook.grad.abs().sum() > 0
    assert torch.allclose(out.loss, out.codebook_loss + 0.25 * out.commitment_loss)


def test_perplexity_and_codes_used_describe_the_histogram():
    vq = VectorQuantizer(4, 1, init="random").eval()
    vq.codebook.copy_(torch.tensor([[0.0], [1.0], [2.0], [3.0]]))
    out = vq(torch.tensor([[[0.0, 0.1, 1.0, 0.9]]]))  # two codes, each half the time
    assert out.codes_used.item() == 2
    assert out.perplexity.item() == pytest.approx(2.0, rel=1e-5)
    out = vq(torch.tensor([[[0.0, 1.0, 2.0, 3.0]]]))
    assert out.perplexity.item() == pytest.approx(4.0, rel=1e-5)


def test_data_initialisation_starts_with_many_codes_in_use():
    torch.manual_seed(0)
    vq = VectorQuantizer(64, 8, init="data")
    z = torch.randn(4, 8, 256) * 0.01 + 5.0  # far from a N(0, 1) codebook
    out = vq(z)
    assert vq.initialized.item() == 1
    assert out.codes_used.item() > 40
    cold = VectorQuantizer(64, 8, init="random")
    assert cold(z).codes_used.item() < 5


def test_wrong_channel_count_is_refused():
    with pytest.raises(ValueError, match="expected 4 channels"):
        VectorQuantizer(8, 4)(torch.randn(2, 3, 5))


def test_commitment_is_the_mean_squared_distance():
    vq = VectorQuantizer(2, 1, beta=0.25, init="random").eval()
    vq.codebook.copy_(torch.tensor([[0.0], [10.0]]))
    out = vq(torch.tensor([[[1.0, 2.0]]]))
    assert out.commitment_loss.item() == pytest.approx((1 + 4) / 2)
    assert out.loss.item() == pytest.approx(0.25 * 2.5)
    assert math.isclose(out.perplexity.item(), 1.0, rel_tol=1e-6)
