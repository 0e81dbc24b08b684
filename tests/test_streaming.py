"""Bounded-memory encoding and decoding: chunked work must equal the whole-signal computation."""

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import tiny_dict

from vqaudio.audio.io import iter_audio, read_audio
from vqaudio.generation.engine import generate
from vqaudio.inference.codec import decode_codes, iter_decode_codes
from vqaudio.inference.load import Codec
from vqaudio.models.build import build_audio_vqvae
from vqaudio.models.streaming import encode_audio, encode_chunks
from vqaudio.recipe import validate_recipe


def make_codec(top: dict | None = None, **encoder) -> Codec:
    torch.manual_seed(0)
    model_section = {**tiny_dict()["model"], "encoder": {"channels": 16, **encoder}}
    if top is not None:
        model_section["top"] = top
    recipe = validate_recipe(tiny_dict(model=model_section), "t")
    model = build_audio_vqvae(recipe.model, 2).eval()
    return Codec(model, None, "f" * 16, 0, 16000, ["a", "b"], recipe.to_dict(), torch.device("cpu"))


TOP = {"downsample_layers": 2, "channels": 8, "residual_layers": 2, "codebook_size": 16, "dim": 8}


@pytest.mark.parametrize(
    "encoder",
    [
        {"downsample_layers": 3, "residual_layers": 1},
        {"downsample_layers": 4, "residual_layers": 3},
        {"downsample_layers": 3, "residual_layers": 1, "top": TOP},
    ],
    ids=["hop8", "hop16", "two_level"],
)
def test_chunked_encoding_equals_encoding_the_whole_signal(encoder):
    codec = make_codec(**encoder)
    rng = np.random.default_rng(0)
    audio = (0.3 * rng.standard_normal(16 * 400 + 13)).astype(np.float32)  # not a whole number of frames
    whole, whole_top = encode_audio(codec.model, audio)
    sizes = rng.integers(1, 900, size=200)
    cuts = np.cumsum(sizes)[np.cumsum(sizes) < audio.size]
    blocks = np.split(audio, cuts)
    chunked = encode_chunks(codec.model, blocks, chunk_frames=24)
    assert chunked.num_samples == audio.size
    frames = -(-audio.size // codec.top_hop) * codec.ratio
    assert chunked.codes.shape == whole.shape == (1, frames)
    assert np.array_equal(chunked.codes, whole)
    if "top" in encoder:
        assert chunked.top.shape == whole_top.shape == (1, frames // 4)
        assert np.array_equal(chunked.top, whole_top)
        assert len(np.unique(whole_top)) > 1
    else:
        assert chunked.top is None and whole_top is None
    assert len(blocks) > 10 and whole.shape[1] > 10 * 24  # many blocks, many chunks


def test_streamed_reading_equals_reading_the_whole_file(tmp_path):
    import soxr

    from vqaudio.data.demo import synthesize_utterance

    path = tmp_path / "48k.wav"  # a 48 kHz recording, read at 16 kHz
    sf.write(path, synthesize_utterance(2, 5, 2.3, 48000), 48000, subtype="PCM_16")
    audio, rate = sf.read(path, dtype="float32")
    one_shot = soxr.resample(audio, rate, 16000, quality="HQ")
    streamed = np.concatenate(list(iter_audio(path, 16000, block_seconds=0.37)))
    assert np.array_equal(one_shot, streamed)
    assert np.array_equal(read_audio(path, 16000), one_shot)


def test_streamed_reading_rejects_nan(tmp_path):
    audio = np.zeros(4000, dtype=np.float32)
    audio[3000] = np.nan
    sf.write(tmp_path / "nan.wav", audio, 8000, subtype="FLOAT")
    from vqaudio.errors import VQAudioError

    with pytest.raises(VQAudioError, match="NaN or infinite"):
        list(iter_audio(tmp_path / "nan.wav", 8000, block_seconds=0.1))


def test_block_conditioning_equals_the_whole_sequence():
    model = make_codec().model
    codes = torch.randint(0, 32, (2, 1, 50))
    whole = model.cond_net(model.quantizer.lookup(codes))
    for first, last in [(0, 7), (7, 19), (19, 50), (49, 50)]:
        assert torch.allclose(model.latent_conditioning(codes, first, last), whole[:, :, first:last], atol=1e-6)


def test_two_level_block_conditioning_equals_the_whole_sequence():
    model = make_codec(top=TOP).model
    codes, top = torch.randint(0, 32, (2, 1, 48)), torch.randint(0, 16, (2, 1, 12))
    whole = model.cond_net(torch.cat([model.quantizer.lookup(codes), model.top.expand(model.top.quantizer.lookup(top))], 1))
    for first, last in [(0, 7), (7, 19), (19, 48), (47, 48), (5, 6), (8, 12)]:
        assert torch.allclose(model.latent_conditioning(codes, first, last, top), whole[:, :, first:last], atol=1e-6)
    changed = top.clone()
    changed[:, :, 5] = (changed[:, :, 5] + 1) % 16  # top frame 5 covers bottom frames 20..23
    moved = model.cond_net(torch.cat([model.quantizer.lookup(codes), model.top.expand(model.top.quantizer.lookup(changed))], 1))
    differs = (moved - whole).abs().amax(dim=(0, 1)) > 0
    assert differs[20:24].all() and not differs[:18].any() and not differs[26:].any()

def test_streamed_decoding_equals_one_pass_over_the_whole_conditioning():
    codec = make_codec()
    model = codec.model
    codes = torch.randint(0, 32, (1, 1, 200))  # 1,600 samples: several generation blocks
    with torch.no_grad():
        cond = model.cond_net(model.quantizer.lookup(codes))
        speaker = model.speaker_embedding(torch.tensor([1]))
    one_pass = generate(model.decoder, 1600, 1, cond, speaker, first_input=128, temperature=0).classes
    from vqaudio.audio.mulaw import mulaw_decode

    blocks = list(iter_decode_codes(codec, codes[0].numpy(), 1, num_samples=1590, temperature=0))
    assert len(blocks) > 1
    streamed = np.concatenate(blocks)
    assert streamed.shape == (1590,)
    assert np.array_equal(streamed, mulaw_decode(one_pass[0, :1590]).numpy())
    assert np.array_equal(streamed, decode_codes(codec, codes[0].numpy(), 1, 1590, temperature=0))
