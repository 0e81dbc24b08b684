"""Pre-emphasis before μ-law and de-emphasis after decoding (model.decoder.pre_emphasis)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import examples, tiny_dict
from hypothesis import given, settings
from hypothesis import strategies as st

from vqaudio.audio.emphasis import DeEmphasis, de_emphasis, pre_emphasis
from vqaudio.audio.mulaw import mulaw_encode
from vqaudio.errors import VQAudioError
from vqaudio.generation.decode import decode
from vqaudio.models.build import build_audio_vqvae
from vqaudio.recipe import validate_recipe


@settings(max_examples=examples(50))
@given(
    seed=st.integers(0, 2**31 - 1),
    length=st.integers(1, 400),
    coefficient=st.floats(0.0, 0.97),
    cuts=st.lists(st.integers(0, 400), max_size=5),
)
def test_de_emphasis_undoes_pre_emphasis_in_any_blocks(seed, length, coefficient, cuts):
    audio = torch.from_numpy(np.random.default_rng(seed).uniform(-1, 1, (2, length)))
    emphasised = pre_emphasis(audio, coefficient)
    torch.testing.assert_close(de_emphasis(emphasised, coefficient), audio, atol=1e-9, rtol=0)
    bounds = sorted({0, length, *[c for c in cuts if c < length]})
    stream = DeEmphasis(coefficient)
    joined = torch.cat([stream(emphasised[:, a:b]) for a, b in zip(bounds, bounds[1:])], dim=1)
    torch.testing.assert_close(joined, audio, atol=1e-9, rtol=0)


def test_pre_emphasis_is_the_first_difference_filter():
    x = torch.tensor([1.0, 2.0, -1.0, 0.5])
    torch.testing.assert_close(pre_emphasis(x, 0.5), torch.tensor([1.0, 1.5, -2.0, 1.0]))
    assert pre_emphasis(x, 0.0) is x


def _models(coefficient: float):
    plain = build_audio_vqvae(validate_recipe(tiny_dict(), "tiny").model, 2).eval()
    data = tiny_dict()
    data["model"]["decoder"]["pre_emphasis"] = coefficient
    emphasised = build_audio_vqvae(validate_recipe(data, "tiny").model, 2).eval()
    emphasised.load_state_dict(plain.state_dict())
    return plain, emphasised


def test_training_targets_are_the_pre_emphasised_samples():
    torch.manual_seed(0)
    plain, emphasised = _models(0.85)
    audio = torch.rand(1, 64) * 0.6 - 0.3
    out = emphasised(audio, torch.tensor([0]))
    assert torch.equal(out.targets, mulaw_encode(pre_emphasis(audio, 0.85)))
    assert not torch.equal(out.targets, plain(audio, torch.tensor([0])).targets)


@pytest.mark.parametrize("backend", ["plain", "fast"])
def test_decoding_de_emphasises_what_the_wavenet_samples(backend):
    """The same weights and noise sample the same classes; pre-emphasis only adds the filter after."""
    torch.manual_seed(0)
    plain, emphasised = _models(0.85)
    codes = torch.randint(0, plain.codebook_size, (2, 1, 9))
    speaker = torch.tensor([0, 1])
    a = decode(plain, codes, speaker, generator=torch.Generator().manual_seed(3), backend=backend)
    b = decode(emphasised, codes, speaker, generator=torch.Generator().manual_seed(3), backend=backend)
    torch.testing.assert_close(b, de_emphasis(a, 0.85).clamp(-1, 1), atol=1e-6, rtol=0)
    assert not torch.allclose(a, b)


def test_a_conv_decoder_refuses_pre_emphasis():
    data = tiny_dict()
    data["model"]["decoder"].update(kind="conv", channels=16, strides=[2, 4], pre_emphasis=0.85)
    with pytest.raises(VQAudioError, match=r"^tiny: model.decoder.pre_emphasis is for a WaveNet"):
        validate_recipe(data, "tiny")
