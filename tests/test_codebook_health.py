"""Quantiser options that keep a codebook healthy, and residual VQ (one model, several bitrates)."""

import pytest
import torch
import torch.nn.functional as F

from vqaudio.models.kmeans import kmeans, nearest_code
from vqaudio.models.quantizer import VectorQuantizer, usage_stats
from vqaudio.models.residual_quantizer import ResidualVectorQuantizer


def clustered(n_clusters=8, per=200, dim=4, spread=0.05, seed=0):
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(n_clusters, dim, generator=gen) * 3
    points = centres.repeat_interleave(per, 0) + spread * torch.randn(n_clusters * per, dim, generator=gen)
    return centres, points


def as_batch(points: torch.Tensor, batch: int = 4) -> torch.Tensor:
    """[N, D] -> [B, D, N / B] channels-first latents."""
    return points.view(batch, -1, points.shape[1]).transpose(1, 2).contiguous()


def test_nearest_code_in_chunks_equals_the_full_distance_matrix(monkeypatch):
    from vqaudio.models import kmeans as module

    monkeypatch.setattr(module, "_CHUNK_ELEMENTS", 50)  # force many chunks
    flat, codebook = torch.randn(333, 5), torch.randn(17, 5)
    assert torch.equal(nearest_code(flat, codebook), torch.cdist(flat, codebook).argmin(1))


def test_kmeans_finds_distinct_codes_that_fit_the_data():
    centres, points = clustered()
    start = points[torch.arange(0, 8) * 10]  # a bad start: all seeds in the first cluster
    found = kmeans(points, start, iters=20)
    error_before = (points - start[nearest_code(points, start)]).pow(2).sum(1).mean()
    error_after = (points - found[nearest_code(points, found)]).pow(2).sum(1).mean()
    assert error_after < 0.2 * error_before
    assert len(set(nearest_code(points, found).tolist())) >= 6  # distinct codes, not one


def test_kmeans_initialisation_uses_the_first_batches():
    centres, points = clustered(per=100)
    vq = VectorQuantizer(8, 4, init="kmeans", init_batches=2, kmeans_iters=15, update="ema")
    first, second = as_batch(points[::2]), as_batch(points[1::2])
    vq(first)
    assert vq.initialized.item() == 0  # still collecting
    vq(second)
    assert vq.initialized.item() == 1
    vq.eval()
    out = vq(as_batch(points))
    assert out.codes_used.item() >= 7
    # codes sit on real cluster centres (Lloyd's may leave one between two clusters)
    assert (torch.cdist(vq.codebook, centres).min(1).values < 0.5).sum() >= 6


def test_a_dead_code_is_revived_and_its_statistics_reset():
    torch.manual_seed(0)
    vq = VectorQuantizer(4, 2, init="random", restart_threshold=0.5, usage_decay=0.5)
    with torch.no_grad():
        vq.codebook.copy_(torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [50.0, 50.0]]))
        vq.ema_sum.copy_(vq.codebook)
        vq.usage.fill_(10.0)
    data = as_batch(torch.rand(64, 2), batch=2)  # never near code 3
    restarts = 0
    for _ in range(6):
        restarts += int(vq(data).restarts)
    assert restarts >= 1
    assert vq.codebook[3].abs().max() <= 1.0 + 1e-3  # moved from (50, 50) into the data
    # statistics restarted with the code: count near one observation, sum near the code itself
    assert vq.ema_count[3] < 2.0
    assert torch.allclose(vq.ema_sum[3] / vq.ema_count[3], vq.codebook[3], atol=0.2)


def test_without_restarts_the_dead_code_stays_dead():
    vq = VectorQuantizer(4, 2, init="random", restart_threshold=0.0)
    with torch.no_grad():
        vq.codebook.copy_(torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [50.0, 50.0]]))
        vq.ema_sum.copy_(vq.codebook)
    data = as_batch(torch.rand(64, 2), batch=2)
    for _ in range(6):
        assert vq(data).restarts.item() == 0
    assert vq.codebook[3].min() > 49.0  # unused, so only Laplace smoothing nudges it


def test_bias_corrected_ema_gives_the_batch_means_after_one_step():
    vq = VectorQuantizer(2, 1, init="random", decay=0.99, epsilon=1e-12, bias_correction=True)
    with torch.no_grad():
        vq.codebook.copy_(torch.tensor([[0.0], [10.0]]))
    vq(torch.tensor([[[1.0, 3.0, 9.0, 12.0]]]))
    # zero-debiased: one step of decay 0.99 is divided by 1 - 0.99, leaving the batch statistics
    assert torch.allclose(vq.codebook, torch.tensor([[2.0], [10.5]]), atol=1e-4)
    plain = VectorQuantizer(2, 1, init="random", decay=0.99, epsilon=1e-12)
    with torch.no_grad():
        plain.codebook.copy_(torch.tensor([[0.0], [10.0]]))
        plain.ema_sum.copy_(plain.codebook)
    plain(torch.tensor([[[1.0, 3.0, 9.0, 12.0]]]))
    # without correction the initial codes still weigh 0.99 against 0.01 of the batch
    assert plain.codebook[0].item() == pytest.approx((0.99 * 0 + 0.01 * 4) / (0.99 + 0.01 * 2), rel=1e-4)


def test_cosine_codebook_has_unit_rows_and_ignores_scale():
    torch.manual_seed(0)
    vq = VectorQuantizer(16, 8, cosine=True, init="data")
    z = torch.randn(2, 8, 50)
    out = vq(z)
    assert torch.allclose(vq.vectors().norm(dim=1), torch.ones(16), atol=1e-5)
    assert torch.allclose(out.quantized.norm(dim=1), torch.ones(2, 50), atol=1e-5)
    vq.eval()
    assert torch.equal(vq(z).codes, vq(z * 7.0).codes)


def test_residual_error_falls_as_codebooks_are_added():
    torch.manual_seed(0)
    rvq = ResidualVectorQuantizer(n_q=4, codebook_size=16, dim=8, init="kmeans", init_batches=1)
    data = torch.randn(4, 8, 256)
    for _ in range(20):
        rvq(data)
    rvq.eval()
    errors = [F.mse_loss(rvq(data, n_q=n).quantized, data).item() for n in range(1, 5)]
    assert all(a > b for a, b in zip(errors, errors[1:])), errors
    codes = rvq(data, n_q=3).codes
    assert codes.shape == (4, 3, 256)
    assert torch.allclose(rvq.lookup(codes), rvq(data, n_q=3).quantized, atol=1e-5)


def test_quantizer_dropout_trains_examples_on_fewer_codebooks():
    torch.manual_seed(0)
    # loss-trained codebooks, so the forward pass does not move them before we look them up
    rvq = ResidualVectorQuantizer(n_q=4, dropout=True, codebook_size=8, dim=4, init="random", update="loss")
    z = torch.randn(64, 4, 10)
    out = rvq(z)
    # the training output of an example equals the sum of its first k codes for some k in 1..4
    per_level = [rvq.lookup(out.codes[:, :k]) for k in range(1, 5)]
    matches = torch.stack([(p - out.quantized).abs().amax(dim=(1, 2)) < 1e-5 for p in per_level], dim=1)
    assert matches.any(1).all()
    used = matches.float().argmax(1) + 1
    assert len(set(used.tolist())) >= 3  # dropout really varies the depth
    # later codebooks only count assignments from examples that reached them
    assert out.counts[0].sum() == 640 and out.counts[3].sum() < 640
    rvq.eval()
    assert torch.allclose(rvq(z).quantized, per_level[3], atol=1e-5)  # no dropout at evaluation


def test_gradient_reaches_the_encoder_through_residual_levels():
    rvq = ResidualVectorQuantizer(n_q=3, dropout=True, codebook_size=8, dim=4, init="random", update="loss")
    encoder = torch.nn.Conv1d(1, 4, 3, padding=1)
    out = rvq(encoder(torch.randn(8, 1, 20)))
    (out.quantized.pow(2).sum() + out.loss).backward()
    assert encoder.weight.grad.abs().sum() > 0
    assert all(level.codebook.grad is not None for level in rvq.levels)


def test_usage_over_many_batches():
    counts = torch.tensor([4.0, 4.0, 0.0, 0.0])
    stats = usage_stats(counts)
    assert stats == {"codes_used": 2.0, "perplexity": pytest.approx(2.0), "entropy": pytest.approx(1.0)}


def test_a_level_that_dropout_left_empty_still_takes_its_steps():
    """Under DDP every rank must run the same collective steps, even when its batch sent no
    example to a level: initialisation then seeds from all rows and nothing is counted."""
    vq = VectorQuantizer(8, 4, init="kmeans", init_batches=1, restart_threshold=0.5)
    z = torch.randn(3, 4, 10)
    out = vq(z, mask=torch.zeros(3, dtype=torch.bool))
    assert vq.initialized.item() == 1
    assert out.counts.sum() == 0 and out.restarts.item() == 0
    assert out.commitment_loss.item() == 0.0
