"""The discretised mixture-of-logistics output over 16-bit samples (model.decoder.output: mol)."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import examples, tiny_dict
from hypothesis import given, settings
from hypothesis import strategies as st
from test_generation import conditioning, teacher_forced_logits

from vqaudio.generation.cuda_graph import CudaGraphBackend
from vqaudio.generation.decode import decode
from vqaudio.generation.engine import generate
from vqaudio.models import mixture
from vqaudio.models.build import build_audio_vqvae
from vqaudio.models.wavenet import WaveNet
from vqaudio.recipe import validate_recipe

EVERY = torch.arange(mixture.LEVELS)


@settings(max_examples=examples(20))
@given(seed=st.integers(0, 2**31 - 1), mixtures=st.integers(1, 5), log_scale=st.floats(-9, 1))
def test_the_probabilities_of_the_65536_values_sum_to_one(seed, mixtures, log_scale):
    gen = torch.Generator().manual_seed(seed)
    params = torch.randn(1, 3 * mixtures, 1, generator=gen, dtype=torch.float64)
    params[:, mixtures : 2 * mixtures] = torch.rand(1, mixtures, 1, generator=gen, dtype=torch.float64) * 2.2 - 1.1
    params[:, 2 * mixtures :] = log_scale + torch.randn(1, mixtures, 1, generator=gen, dtype=torch.float64)
    log_p = mixture.log_prob(params.expand(mixture.LEVELS, -1, -1), EVERY[:, None])
    assert log_p.shape == (mixture.LEVELS, 1)
    assert torch.logsumexp(log_p.flatten(), 0).exp().item() == pytest.approx(1.0, abs=2e-3)


def test_one_logistic_puts_its_bin_mass_on_each_value():
    mean, log_scale = 0.1, math.log(0.05)
    params = torch.tensor([[0.0, mean, log_scale]], dtype=torch.float64)[..., None]
    c = mixture.value_to_class(torch.tensor(0.2)).item()
    x = mixture.class_to_value(torch.tensor(c)).double()
    cdf = lambda v: torch.sigmoid((v - mean) / 0.05)  # noqa: E731
    expected = torch.log(cdf(x + mixture.HALF_BIN) - cdf(x - mixture.HALF_BIN))
    torch.testing.assert_close(mixture.log_prob(params, torch.tensor([[c]])), expected.reshape(1, 1), rtol=1e-6, atol=0)
    edge = mixture.log_prob(params, torch.tensor([[0]]))  # the lowest value takes the whole lower tail
    torch.testing.assert_close(edge.exp(), cdf(torch.tensor(-1.0 + mixture.HALF_BIN, dtype=torch.float64)).reshape(1, 1))


def test_values_and_classes_round_trip():
    assert torch.equal(mixture.value_to_class(mixture.class_to_value(EVERY)), EVERY)
    assert mixture.value_to_class(torch.tensor([-2.0, 0.0, 2.0])).tolist() == [0, mixture.SILENCE, mixture.LEVELS - 1]


def test_sampling_draws_the_chosen_component_and_greedy_takes_its_mean():
    params = torch.tensor([[5.0, -5.0, 0.5, -0.5, math.log(0.01), math.log(0.01)]]).expand(4000, -1)
    gumbel = -torch.log(-torch.log(torch.rand(4000, 3, generator=torch.Generator().manual_seed(0))))
    values = mixture.class_to_value(mixture.sample(params, gumbel, 1.0))
    assert (values - 0.5).abs().mean() < 0.05 and values.std() == pytest.approx(0.01 * math.pi / math.sqrt(3), rel=0.1)
    greedy = mixture.sample(params[:1], gumbel[:1], 1.0, greedy=True)
    assert greedy.item() == mixture.value_to_class(torch.tensor(0.5)).item()


def mixture_net(kernel_size=2):
    torch.manual_seed(0)
    return WaveNet(
        num_classes=mixture.LEVELS, residual_channels=8, gate_channels=16, skip_channels=12, layers=6, stacks=2,
        kernel_size=kernel_size, cond_channels=5, global_channels=3, hop=4, mixtures=3,
    ).eval()  # fmt: skip


@pytest.mark.parametrize("backend", ["plain", "fast"])
def test_every_step_equals_the_teacher_forced_pass(backend):
    net = mixture_net()
    c, g = conditioning(net, 3, 400)
    out = generate(net, 400, 3, c, g, first_input=mixture.SILENCE, generator=torch.Generator().manual_seed(0),
                   backend=backend, record_logits=True)  # fmt: skip
    assert out.classes.shape == (3, 400) and out.logits.shape == (3, 400, 9)
    assert out.classes.min() >= 0 and out.classes.max() < mixture.LEVELS
    reference = teacher_forced_logits(net, out.classes, c, g, first_input=mixture.SILENCE)
    assert (out.logits - reference).abs().max().item() <= 1e-4


@pytest.mark.parametrize("temperature", [1.0, 0.7, 0.0])
def test_the_fast_path_draws_the_plain_paths_samples(temperature):
    net = mixture_net()
    c, g = conditioning(net, 4, 800)
    runs = [generate(net, 800, 4, c, g, temperature=temperature, first_input=mixture.SILENCE,
                     generator=torch.Generator().manual_seed(9), backend=b) for b in ("plain", "fast")]  # fmt: skip
    assert torch.equal(runs[0].classes, runs[1].classes)
    assert len(torch.unique(runs[0].classes)) > 100  # 16-bit values, not a few classes


def test_the_device_indexed_step_samples_what_the_plain_path_samples():
    """The CUDA-graph back end's step, run eagerly on the CPU (its noise trick for greedy included)."""
    net = mixture_net()
    c, g = conditioning(net, 2, 64)
    plain = generate(net, 64, 2, c, g, temperature=0, first_input=mixture.SILENCE, backend="plain").classes
    bias = net.frame_bias(c, g, 2)
    runner = CudaGraphBackend(net, 2, use_graph=False)
    with torch.inference_mode():
        classes, _, _ = runner.run(0, 64, torch.full((2,), mixture.SILENCE), bias, 0, 4, None, 1.0, True, False)
    assert torch.equal(classes, plain)


def test_a_vqvae_with_the_mixture_output_trains_and_decodes():
    data = tiny_dict()
    data["model"]["decoder"].update(output="mol", mixtures=4, pre_emphasis=0.85)
    model = build_audio_vqvae(validate_recipe(data, "tiny").model, 2)
    audio = torch.rand(2, 64) * 0.6 - 0.3
    loss, metrics = model.training_step({"audio": audio, "speaker": torch.tensor([0, 1])})
    loss.backward()
    assert model.decoder.embed.scale.grad is not None and metrics["nll"] > 0
    model.eval()
    out = decode(model, model.encode(audio), torch.tensor([0, 1]), generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, 64) and out.abs().max() <= 1
