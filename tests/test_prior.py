"""The code prior: causality, incremental equals full pass, sampling shapes and seeds."""

import math

import pytest
import torch

from vqaudio.errors import VQAudioError
from vqaudio.generation.code_prior import PriorStepper, sample_codes
from vqaudio.models.code_prior import IGNORE, CodePrior

K = 16


def make_prior(n_q: int, seed: int = 0) -> CodePrior:
    torch.manual_seed(seed)
    prior = CodePrior(K, n_q, num_speakers=3, layers=4, stacks=1, residual_channels=8, gate_channels=16,
                      skip_channels=16, speaker_dim=4)
    with torch.no_grad():  # random (not zero) output weights, so that every input matters
        for p in prior.parameters():
            p.add_(0.3 * torch.randn_like(p))
    prior.mask_start_logit()
    return prior.eval()


def random_codes(n_q: int, frames: int, batch: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, K, (batch, n_q, frames), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("n_q", [1, 3])
def test_log_probs_shape_and_normalisation(n_q):
    prior = make_prior(n_q)
    lp = prior.log_probs(random_codes(n_q, 10), torch.tensor([0, 2]))
    assert lp.shape == (2, 10 * n_q, K)
    torch.testing.assert_close(lp.exp().sum(-1), torch.ones(2, 10 * n_q))


@pytest.mark.parametrize("n_q", [1, 2])
def test_prior_is_causal(n_q):
    """Changing the code at token position p changes no prediction at or before p."""
    prior = make_prior(n_q)
    codes = random_codes(n_q, 12)
    speaker = torch.tensor([1, 1])
    base = prior.log_probs(codes, speaker)
    for frame, level in [(0, 0), (5, n_q - 1), (11, 0)]:
        changed = codes.clone()
        changed[:, level, frame] = (changed[:, level, frame] + 1) % K
        other = prior.log_probs(changed, speaker)
        p = frame * n_q + level
        torch.testing.assert_close(other[:, : p + 1], base[:, : p + 1])
        if p + 1 < base.shape[1]:
            assert not torch.allclose(other[:, p + 1], base[:, p + 1])


@pytest.mark.parametrize("n_q", [1, 3])
def test_incremental_log_probs_equal_the_full_pass(n_q):
    prior = make_prior(n_q)
    codes = random_codes(n_q, 9)
    speaker = torch.tensor([0, 2])
    full = prior.log_probs(codes, speaker)
    stepper = PriorStepper(prior, speaker)
    tokens = codes.transpose(1, 2).reshape(2, -1)
    for p in range(tokens.shape[1]):
        torch.testing.assert_close(stepper.log_probs(), full[:, p], atol=1e-5, rtol=1e-5)
        stepper.feed(tokens[:, p])


def test_speaker_changes_the_prediction():
    prior = make_prior(1)
    codes = random_codes(1, 6, batch=1)
    a = prior.log_probs(codes, torch.tensor([0]))
    b = prior.log_probs(codes, torch.tensor([1]))
    assert not torch.allclose(a, b)


def test_padding_is_ignored_by_the_loss():
    prior = make_prior(2)
    codes = random_codes(2, 8, batch=1)
    padded = torch.cat([codes, torch.full((1, 2, 5), IGNORE)], dim=2)
    total, count = prior.nll_nats(codes, torch.tensor([0]))
    total_padded, count_padded = prior.nll_nats(padded, torch.tensor([0]))
    assert count == count_padded == 16
    torch.testing.assert_close(total, total_padded)
    loss, metrics = prior.training_step({"codes": codes, "speaker": torch.tensor([0])})
    assert CodePrior.summarize_metrics(metrics)["bits_per_code"] == pytest.approx(loss.item() / math.log(2))


@pytest.mark.parametrize("n_q", [1, 2])
def test_sampling_shapes_range_and_seeds(n_q):
    prior = make_prior(n_q)
    speaker = torch.tensor([0, 1, 2])
    a = sample_codes(prior, 20, speaker, generator=torch.Generator().manual_seed(5))
    b = sample_codes(prior, 20, speaker, generator=torch.Generator().manual_seed(5))
    c = sample_codes(prior, 20, speaker, generator=torch.Generator().manual_seed(6))
    assert a.shape == (3, n_q, 20) and a.dtype == torch.long
    assert int(a.min()) >= 0 and int(a.max()) < K
    assert torch.equal(a, b) and not torch.equal(a, c)
    greedy = sample_codes(prior, 20, speaker, temperature=0)
    # Greedy sampling picks the most likely code given the greedy past: check with the full pass.
    lp = prior.log_probs(greedy, speaker)
    tokens = greedy.transpose(1, 2).reshape(3, -1)
    assert torch.equal(lp.argmax(-1), tokens)


def loud_start_prior(n_q: int) -> CodePrior:
    """A prior whose start-token logit row was made to dominate (input-dependent and large), as
    an unmasked or wrongly masked head could be; the caller masks it or not."""
    prior = make_prior(n_q)
    head = prior.wavenet.head[-1]
    with torch.no_grad():
        head.weight[prior.start_token] = torch.randn_like(head.weight[prior.start_token])
        head.bias[prior.start_token] = 20.0
    return prior


def test_the_start_logit_is_masked_for_any_input():
    """Whatever the input tokens and speaker, the output logit of the start token is -1e4, far
    below every code's logit: it does not merely hold for one input."""
    prior = loud_start_prior(2)
    prior.mask_start_logit()
    g = torch.Generator().manual_seed(9)
    tokens = torch.randint(0, prior.start_token + 1, (4, 30), generator=g)  # any class, the start token included
    speaker = torch.randint(0, 3, (4,), generator=g)
    logits = prior.wavenet(tokens, global_cond=prior.speaker(speaker))  # [B, classes, L]
    assert torch.all(logits[:, prior.start_token] == -1e4)
    assert logits[:, : prior.start_token].min() > -1e3  # the codes' logits are not masked


def test_one_codebook_sampling_uses_the_engine_and_never_draws_the_start_token():
    speaker = torch.tensor([0, 1])

    def draw(prior, backend):
        generator = torch.Generator().manual_seed(2)
        return sample_codes(prior, 60, speaker, temperature=3.0, generator=generator, backend=backend)

    prior = loud_start_prior(1)
    assert int(draw(prior, "plain").max()) == K  # unmasked, the engine (over all classes) does draw it
    prior.mask_start_logit()
    plain, fast = draw(prior, "plain"), draw(prior, "fast")
    assert torch.equal(plain, fast)  # the fused kernel and the PyTorch step draw the same codes
    assert int(plain.min()) >= 0 and int(plain.max()) < K  # even at a high temperature: the start logit is masked
    assert plain.unique().numel() > K // 2  # a high temperature: many codes are drawn, not one


@pytest.mark.parametrize("n_q", [1, 3])
def test_masking_the_start_logit_changes_no_code_probability(n_q):
    prior = loud_start_prior(n_q)
    codes, speaker = random_codes(n_q, 10), torch.tensor([0, 2])
    before = prior.log_probs(codes, speaker)
    prior.mask_start_logit()
    after = prior.log_probs(codes, speaker)
    assert torch.equal(before, after)  # each code's softmax covers only its level's K codes
    head = prior.wavenet.head[-1]
    assert head.bias[prior.start_token] == -1e4  # ... although the start row itself did change


# ----- the bottom prior of a two-level model: conditioned on the top codes -----

RATIO, TOP_K = 4, 8


def make_bottom_prior(n_q: int = 1) -> CodePrior:
    torch.manual_seed(3)
    prior = CodePrior(K, n_q, num_speakers=3, layers=4, stacks=1, residual_channels=8, gate_channels=16, skip_channels=16,
                      speaker_dim=4, condition_codes=TOP_K, condition_ratio=RATIO, condition_blocks=2)  # fmt: skip
    with torch.no_grad():
        for p in prior.parameters():
            p.add_(0.3 * torch.randn_like(p))
    prior.mask_start_logit()
    return prior.eval()


def random_top(frames: int, batch: int = 2, seed: int = 4) -> torch.Tensor:
    return torch.randint(0, TOP_K, (batch, 1, frames // RATIO), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("n_q", [1, 2])
def test_bottom_prior_is_causal_in_the_bottom_codes(n_q):
    prior = make_bottom_prior(n_q)
    codes, top, speaker = random_codes(n_q, 16), random_top(16), torch.tensor([0, 2])
    base = prior.log_probs(codes, speaker, top)
    for frame in (0, 7, 15):
        changed = codes.clone()
        changed[:, 0, frame] = (changed[:, 0, frame] + 1) % K
        other = prior.log_probs(changed, speaker, top)
        p = frame * n_q
        torch.testing.assert_close(other[:, : p + 1], base[:, : p + 1])
        if p + 1 < base.shape[1]:
            assert not torch.allclose(other[:, p + 1], base[:, p + 1])


def test_a_top_code_conditions_the_bottom_frames_under_it_and_nothing_far_away():
    prior = make_bottom_prior()
    codes, top, speaker = random_codes(1, 120), random_top(120), torch.tensor([0, 1])
    base = prior.log_probs(codes, speaker, top)
    changed = top.clone()
    changed[:, 0, 6] = (changed[:, 0, 6] + 1) % TOP_K  # top frame 6 sits over bottom frames 24..27
    moved = (prior.log_probs(codes, speaker, changed) - base).abs().amax(dim=(0, 2)) > 1e-6
    assert moved[24:28].all()
    reach = 1 + 1 + 2  # the stack's kernel-3 conv and dilated blocks (dilations 1, 2), in top frames
    assert not moved[: (6 - reach) * RATIO].any()  # the conditioning is not causal, but it is local
    # ... and the causal WaveNet carries a change at most its receptive field further on
    last_reached = (6 + reach + 1) * RATIO - 1 + prior.wavenet.receptive_field - 1
    assert not moved[last_reached + 1 :].any() and last_reached + 1 < moved.numel()


@pytest.mark.parametrize("n_q", [1, 2])
def test_bottom_prior_incremental_log_probs_equal_the_full_pass(n_q):
    prior = make_bottom_prior(n_q)
    codes, top, speaker = random_codes(n_q, 12), random_top(12), torch.tensor([1, 2])
    full = prior.log_probs(codes, speaker, top)
    stepper = PriorStepper(prior, speaker, top)
    tokens = codes.transpose(1, 2).reshape(2, -1)
    for p in range(tokens.shape[1]):
        torch.testing.assert_close(stepper.log_probs(), full[:, p], atol=1e-5, rtol=1e-5)
        stepper.feed(tokens[:, p])


def test_bottom_prior_sampling_follows_the_top_codes_in_every_back_end():
    prior = make_bottom_prior()
    top, speaker = random_top(40), torch.tensor([0, 1])
    greedy = sample_codes(prior, 40, speaker, temperature=0, top=top, backend="plain")
    lp = prior.log_probs(greedy, speaker, top)
    assert torch.equal(lp.argmax(-1), greedy[:, 0])  # the most likely code given the past and the top
    fast = sample_codes(prior, 40, speaker, temperature=0, top=top, backend="fast")
    assert torch.equal(fast, greedy)
    other = sample_codes(prior, 40, speaker, temperature=0, top=(top + 1) % TOP_K, backend="plain")
    assert not torch.equal(other, greedy)
    with pytest.raises(VQAudioError, match="need 10 top code frames"):
        sample_codes(prior, 40, speaker, top=top[..., :3])
    with pytest.raises(ValueError, match="exactly when"):
        prior.log_probs(greedy, speaker)


def test_a_bottom_prior_refuses_to_run_past_its_top_codes():
    prior = CodePrior(8, 1, 2, layers=2, stacks=1, residual_channels=8, gate_channels=8, skip_channels=8, speaker_dim=4,
                      condition_codes=5, condition_ratio=2, condition_blocks=1).eval()  # fmt: skip
    top = torch.tensor([[[1, 3]]])  # two top frames cover four bottom frames
    stepper = PriorStepper(prior, torch.tensor([0]), top)
    for code in (1, 2, 3, 4):
        stepper.log_probs()
        stepper.feed(torch.tensor([code]))
    with pytest.raises(VQAudioError, match="top frame 2, but only 2 top frame"):
        stepper.log_probs()  # the fifth bottom frame has no top code above it
    with pytest.raises(VQAudioError, match="need 3 top code frames"):
        sample_codes(prior, 5, torch.tensor([0]), top=top)
