import numpy as np
import pytest
import torch
from conftest import tiny_dict

from vqaudio.generation.decode import decode
from vqaudio.models.audio_vqvae import AudioVQVAE
from vqaudio.models.build import build_audio_vqvae
from vqaudio.models.encoder import AudioEncoder
from vqaudio.recipe import validate_recipe


@pytest.mark.parametrize("layers", [0, 1, 3, 6])
def test_encoder_downsamples_by_two_per_layer(layers):
    enc = AudioEncoder(8, 5, downsample_layers=layers, residual_layers=1)
    hop = 2**layers
    assert enc.hop == hop
    assert enc(torch.randn(2, 1, hop * 7)).shape == (2, 5, 7)


def test_paper_encoder_gives_64_times_fewer_steps():
    enc = AudioEncoder(16, 64, downsample_layers=6, kernel_size=4)
    assert enc(torch.randn(1, 1, 16000 - 16000 % 64)).shape == (1, 64, 250)


def test_encoder_refuses_a_length_off_the_hop():
    with pytest.raises(ValueError, match="multiple of the hop"):
        AudioEncoder(8, 4, downsample_layers=3)(torch.randn(1, 1, 100))


def tiny_model() -> AudioVQVAE:
    torch.manual_seed(0)
    recipe = validate_recipe(tiny_dict(), "tiny")
    return build_audio_vqvae(recipe.model, 2)


def test_vqvae_training_step_reaches_every_part():
    model = tiny_model()
    batch = {"audio": torch.randn(2, 256).clamp(-1, 1) * 0.3, "speaker": torch.tensor([0, 1])}
    chosen = []
    hook = model.quantizer.register_forward_hook(lambda module, inputs, out: chosen.append(out.codes))
    loss, metrics = model.training_step(batch)
    hook.remove()
    loss.backward()
    for name in ("encoder.net.0.weight", "speaker_embedding.weight", "decoder.convs.0.weight", "cond_net.0.weight"):
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name
    assert set(metrics) >= {"loss", "nll", "commitment", "code_counts"}
    assert metrics["code_counts"].shape == (1, 32) and metrics["code_counts"].sum() == 2 * 256 // 8
    # Usage figures are those of the codes the step chose, counted here independently.
    (codes,) = chosen
    histogram = np.bincount(codes[:, 0].flatten().numpy(), minlength=32)
    np.testing.assert_array_equal(metrics["code_counts"][0].numpy(), histogram)
    probs = histogram[histogram > 0] / histogram.sum()
    entropy = float(-(probs * np.log2(probs)).sum())
    summary = model.summarize_metrics(metrics)
    assert summary["codes_used"] == np.count_nonzero(histogram) > 1
    assert summary["entropy"] == pytest.approx(entropy, abs=1e-6)
    assert summary["perplexity"] == pytest.approx(2.0**entropy, abs=1e-6)


def test_decode_has_hop_samples_per_code_and_depends_on_the_speaker():
    model = tiny_model().eval()
    codes = torch.randint(0, 32, (1, 1, 6))
    a = decode(model, codes, torch.tensor([0]), temperature=0)
    b = decode(model, codes, torch.tensor([1]), temperature=0)
    assert a.shape == (1, 6 * model.hop)
    assert a.abs().max() <= 1.0
    assert not torch.equal(a, b)


def test_unknown_speaker_index_is_refused():
    model = tiny_model()
    with pytest.raises(ValueError, match="speaker index"):
        decode(model, torch.zeros(1, 1, 2, dtype=torch.long), torch.tensor([5]))
