"""Finite scalar quantisation and factorised codes (model.quantizer.kind / code_dim)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import examples, tiny_dict
from hypothesis import given, settings
from hypothesis import strategies as st

from vqaudio.errors import VQAudioError
from vqaudio.models.build import build_audio_vqvae, build_quantizer
from vqaudio.models.factorized import FactorizedQuantizer
from vqaudio.models.fsq import FiniteScalarQuantizer
from vqaudio.recipe import QuantizerConfig, validate_recipe


@settings(max_examples=examples(40))
@given(levels=st.lists(st.integers(2, 9), min_size=1, max_size=5), seed=st.integers(0, 2**31 - 1))
def test_codes_and_grid_points_round_trip(levels, seed):
    fsq = FiniteScalarQuantizer(levels, dim=4)
    codes = torch.from_numpy(np.random.default_rng(seed).integers(0, fsq.codebook_size, 50))
    grid = fsq.grid_from_codes(codes)
    assert grid.shape == (50, len(levels)) and grid.abs().max() <= 1
    assert torch.equal(fsq.codes_from_grid(grid), codes)
    every = torch.arange(fsq.codebook_size)
    assert torch.unique(fsq.grid_from_codes(every), dim=0).shape[0] == fsq.codebook_size  # one point per code


@settings(max_examples=examples(40))
@given(levels=st.lists(st.integers(2, 9), min_size=1, max_size=4), seed=st.integers(0, 2**31 - 1), scale=st.floats(0.1, 50))
def test_rounding_lands_on_the_grid_whatever_the_input(levels, seed, scale):
    fsq = FiniteScalarQuantizer(levels, dim=4)
    z = torch.from_numpy(np.random.default_rng(seed).normal(0, scale, (30, len(levels)))).float()
    grid = fsq.grid(z)
    digits = grid * (fsq.levels // 2) + fsq.levels // 2
    assert torch.equal(digits, digits.round()) and digits.min() >= 0 and (digits < fsq.levels).all()
    codes = fsq.codes_from_grid(grid)
    assert codes.min() >= 0 and codes.max() < fsq.codebook_size


def test_quantised_vectors_are_the_lookup_of_their_codes_and_gradients_reach_the_encoder():
    torch.manual_seed(0)
    fsq = FiniteScalarQuantizer([8, 5, 5, 5], dim=16)
    assert fsq.codebook_size == 1000
    z = torch.randn(2, 16, 7, requires_grad=True)
    out = fsq(z)
    assert out.codes.shape == (2, 7) and out.codes.dtype == torch.int64
    torch.testing.assert_close(out.quantized, fsq.lookup(out.codes))
    out.quantized.square().sum().backward()
    assert z.grad is not None and z.grad.abs().sum() > 0
    assert fsq.project_in.weight.grad.abs().sum() > 0 and fsq.project_out.weight.grad.abs().sum() > 0
    assert out.counts.sum() == 14 and float(out.loss) == 0


def test_residual_fsq_with_dropout_round_trips_codes():
    torch.manual_seed(0)
    config = QuantizerConfig(kind="fsq", levels=[5, 5, 5], n_q=3, dropout=True, dim=8)
    rvq = build_quantizer(config, config.codebook_size, 8)
    z = torch.randn(4, 8, 6, requires_grad=True)
    rvq.train()
    out = rvq(z)
    out.quantized.sum().backward()
    assert z.grad.abs().sum() > 0
    rvq.eval()
    for n in (1, 2, 3):
        out = rvq(z.detach(), n_q=n)
        assert out.codes.shape == (4, n, 6)
        torch.testing.assert_close(out.quantized, rvq.lookup(out.codes), atol=1e-5, rtol=0)
    three = rvq(z.detach(), n_q=3).codes
    assert torch.equal(three[:, :1], rvq(z.detach(), n_q=1).codes)  # a prefix of the codes is a lower rate
    assert not torch.equal(three[:, 1], three[:, 2])  # each level quantises its own residual


def test_factorised_codes_look_up_in_a_small_normalised_space():
    torch.manual_seed(0)
    config = QuantizerConfig(code_dim=4, n_q=2, dim=16, codebook_size=32, init="random")
    rvq = build_quantizer(config, 32, 16)
    level = rvq.levels[0]
    assert isinstance(level, FactorizedQuantizer) and level.quantizer.dim == 4 and level.quantizer.cosine
    z = torch.randn(3, 16, 5, requires_grad=True)
    out = rvq(z)
    out.quantized.sum().backward()
    assert z.grad.abs().sum() > 0 and level.project_out.weight.grad.abs().sum() > 0
    rvq.eval()
    out = rvq(z.detach())
    torch.testing.assert_close(out.quantized, rvq.lookup(out.codes), atol=1e-5, rtol=0)
    torch.testing.assert_close(level.quantizer.vectors().norm(dim=1), torch.ones(32))


@pytest.mark.parametrize("quantizer", [{"kind": "fsq", "levels": [4, 4, 2]}, {"code_dim": 4, "codebook_size": 32}])
def test_a_model_encodes_and_decodes_with_each_quantiser(quantizer):
    data = tiny_dict(model={**tiny_dict()["model"], "quantizer": {**tiny_dict()["model"]["quantizer"], **quantizer}})
    if "levels" in quantizer:  # FSQ's K follows from its levels
        data["model"]["quantizer"].pop("codebook_size")
    model = build_audio_vqvae(validate_recipe(data, "tiny").model, 2)
    assert model.codebook_size == 32
    audio = torch.rand(2, 64) * 0.6 - 0.3
    loss, metrics = model.training_step({"audio": audio, "speaker": torch.tensor([0, 1])})
    loss.backward()
    assert all(p.grad is not None for p in model.encoder.parameters())
    codes = model.encode(audio)
    assert codes.shape == (2, 1, 8) and codes.max() < 32


def test_recipe_errors_name_the_key():
    with pytest.raises(VQAudioError, match="quantizer.kind fsq needs quantizer.levels"):
        validate_recipe(tiny_dict(model={**tiny_dict()["model"], "quantizer": {"kind": "fsq"}}), "r")
    with pytest.raises(VQAudioError, match=r"codebook_size \(32\) must be the product of quantizer.levels \[8, 5\]: 40"):
        validate_recipe(tiny_dict(model={**tiny_dict()["model"], "quantizer": {"kind": "fsq", "levels": [8, 5], "codebook_size": 32}}), "r")
    with pytest.raises(VQAudioError, match="quantizer.levels is for quantizer.kind fsq"):
        validate_recipe(tiny_dict(model={**tiny_dict()["model"], "quantizer": {"levels": [8, 5]}}), "r")


@pytest.mark.slow
def test_a_residual_fsq_conv_model_goes_through_priors_vqa_and_sampling(tmp_path, monkeypatch):
    """Train a residual FSQ model with a conv decoder, a prior over its codes, then code a clip
    into a .vqa file and back, and sample speech from the prior."""
    import soundfile as sf
    import yaml
    from conftest import invoke
    from test_prior_cli import prior_recipe

    monkeypatch.chdir(tmp_path)
    data = tiny_dict(train={"loss": {"mel_windows": [64, 128], "stft_ffts": [128, 256]}})
    data["model"]["quantizer"] = {"kind": "fsq", "levels": [5, 3, 2], "dim": 8, "n_q": 2, "dropout": True}
    data["model"]["decoder"] = {"kind": "conv", "channels": 16, "strides": [2, 4], "speaker_dim": 4, "min_channels": 4}
    (tmp_path / "fsq.yaml").write_text(yaml.safe_dump(data))
    invoke("train", "fsq.yaml", "--quiet", "--device", "cpu")
    vqvae = sorted((tmp_path / "runs" / "tiny").glob("*/checkpoints/step_*.pt"))[-1]
    assert torch.load(vqvae, weights_only=True)["metadata"]["codebook_size"] == 30
    (tmp_path / "prior.yaml").write_text(yaml.safe_dump(prior_recipe(vqvae, 4)))
    invoke("train", "prior.yaml", "--quiet", "--device", "cpu")
    prior = sorted((tmp_path / "runs" / "tinyprior").glob("*/checkpoints/step_*.pt"))[-1]
    clip = tmp_path / "clip.wav"
    sf.write(clip, (0.3 * np.sin(np.arange(1200) * 0.07)).astype(np.float32), 16000)
    invoke("encode", str(clip), "codes.npy", "-c", str(vqvae))
    invoke("encode", str(clip), "c.vqa", "--entropy", "--prior", str(prior))
    invoke("decode", "codes.npy", "from_npy.wav", "-c", str(vqvae))
    invoke("decode", "c.vqa", "from_vqa.wav", "--prior", str(prior))
    assert (tmp_path / "from_vqa.wav").read_bytes() == (tmp_path / "from_npy.wav").read_bytes()
    invoke("sample", "--speaker", "demo0", "--seconds", "0.05", "-c", str(prior), "-o", "samples")
    assert len(list((tmp_path / "samples").glob("*.wav"))) == 1
