"""The feed-forward conv decoder, its spectral losses, the discriminators and adversarial training."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import invoke, tiny_dict, train_in

from vqaudio.errors import VQAudioError
from vqaudio.formats.checkpoint import load_checkpoint
from vqaudio.generation.decode import iter_conv_decode
from vqaudio.models.build import build_audio_vqvae, build_critic, build_spectral_loss
from vqaudio.models.conv_decoder import ConvDecoder, default_strides
from vqaudio.models.discriminators import (
    MultiPeriodDiscriminator,
    MultiScaleSTFTDiscriminator,
)
from vqaudio.recipe import validate_recipe
from vqaudio.tasks import build_setup
from vqaudio.tasks.run import resume_recipe, train
from vqaudio.train.loop import Trainer

CPU = torch.device("cpu")

CONV_DECODER = {"kind": "conv", "channels": 16, "strides": [2, 4], "speaker_dim": 4, "min_channels": 4}
SMALL_CRITIC = {"periods": [2, 3], "period_channels": 4, "max_channels": 16, "stft_windows": [256, 128], "stft_channels": 4}


def conv_dict(**train_keys) -> dict:
    data = tiny_dict(train={"loss": {"mel_windows": [64, 128, 256], "stft_ffts": [128, 256, 512]}, "discriminator": SMALL_CRITIC, **train_keys})
    data["model"]["decoder"] = dict(CONV_DECODER)
    return data


def conv_recipe(**train_keys):
    return validate_recipe(conv_dict(**train_keys), "tiny conv")


def test_the_default_strides_multiply_to_the_hop():
    assert default_strides(64) == [4, 4, 4]
    assert default_strides(128) == [4, 4, 4, 2]
    assert default_strides(8) == [4, 2]


@pytest.mark.parametrize("upsample", ["subpixel", "transposed"])
@pytest.mark.parametrize("act", ["snake", "elu"])
@pytest.mark.parametrize("strides", [[4, 4, 4], [2, 2, 2], [8, 2]])
def test_the_decoder_makes_exactly_hop_samples_per_frame(strides, act, upsample):
    decoder = ConvDecoder(6, 16, strides, global_channels=3, act=act, upsample=upsample)
    for frames in (1, 5, 17):
        out = decoder(torch.randn(2, 6, frames), torch.randn(2, 3))
        assert out.shape == (2, frames * decoder.hop)
        assert out.abs().max() <= 1


def test_the_speaker_changes_the_output():
    decoder = ConvDecoder(6, 16, [2, 2], global_channels=3)
    features = torch.randn(1, 6, 8)
    assert not torch.allclose(decoder(features, torch.zeros(1, 3)), decoder(features, torch.ones(1, 3)))


def test_the_context_bound_covers_the_receptive_field():
    """A change in one frame moves no output sample more than context_frames frames away."""
    torch.manual_seed(0)
    decoder = ConvDecoder(4, 16, [4, 4], act="elu").eval()
    features = torch.randn(1, 4, 40)
    changed = features.clone()
    changed[..., 20] += 5
    diff = (decoder(features) - decoder(changed)).abs().view(40, decoder.hop).amax(dim=1)
    reached = torch.nonzero(diff > 0).flatten()
    assert reached.min() >= 20 - decoder.context_frames and reached.max() <= 20 + decoder.context_frames
    assert reached.max() > 20  # the bound is not vacuous: neighbours do change


@pytest.mark.parametrize("block", [1, 3, 7, 64])
def test_chunked_decoding_equals_one_pass(block):
    torch.manual_seed(0)
    recipe = conv_recipe()
    model = build_audio_vqvae(recipe.model, num_speakers=2).eval()
    audio = torch.randn(2, 8 * 37).clamp(-1, 1) * 0.3
    codes = model.encode(audio)
    speaker = model.speaker_vector(torch.tensor([0, 1]))
    with torch.no_grad():
        whole = model.decoder(model.quantizer.lookup(codes), speaker)
    chunked = torch.cat(list(iter_conv_decode(model, codes, speaker, None, block)), dim=1)
    assert chunked.shape == whole.shape == (2, 8 * 37)
    torch.testing.assert_close(chunked, whole, atol=1e-6, rtol=0)


def test_chunked_decoding_equals_one_pass_with_a_top_level():
    torch.manual_seed(0)
    data = conv_dict()
    data["model"]["top"] = {"downsample_layers": 1, "channels": 8, "residual_layers": 1, "codebook_size": 16, "dim": 4}
    model = build_audio_vqvae(validate_recipe(data, "two-level conv").model, num_speakers=2).eval()
    audio = torch.randn(1, 16 * 11).clamp(-1, 1) * 0.3
    codes, top = model.encode_levels(audio)
    with torch.no_grad():
        features = torch.cat([model.quantizer.lookup(codes), model.top.expand(model.top.quantizer.lookup(top))], dim=1)
        whole = model.decoder(features, model.speaker_vector(torch.tensor([1])))
    chunked = torch.cat(list(iter_conv_decode(model, codes, model.speaker_vector(torch.tensor([1])), top, 3)), dim=1)
    torch.testing.assert_close(chunked, whole, atol=1e-6, rtol=0)


def test_period_discriminators_fold_the_waveform_by_their_period():
    mpd = MultiPeriodDiscriminator([2, 3, 5], channels=4, max_channels=16)
    judgements = mpd(torch.randn(3, 1000))
    assert len(judgements) == 3
    for period, (logits, features) in zip([2, 3, 5], judgements):
        assert len(features) == 6  # four strided layers, one more, and the output
        assert all(f.shape[0] == 3 and f.shape[-1] == period for f in features)
        assert [f.shape[1] for f in features] == [4, 16, 16, 16, 16, 1]
        assert logits.shape == (3, features[-1][0].numel())


def test_stft_discriminators_see_the_complex_spectrum_at_each_window():
    msd = MultiScaleSTFTDiscriminator([256, 128], channels=4)
    audio = torch.randn(2, 1024)
    judgements = msd(audio)
    assert len(judgements) == 2
    for window, (logits, features) in zip([256, 128], judgements):
        frames, bins = 1024 // (window // 4) + 1, window // 2 + 1
        assert features[0].shape == (2, 4, frames, bins)
        assert len(features) == 6
        assert features[-1].shape[:3] == (2, 1, frames)
        assert logits.shape == (2, features[-1][0].numel())
    # The phase matters: a time-reversed waveform has the same magnitudes but not the same judgement.
    flipped = msd(audio.flip(-1))
    assert not torch.allclose(judgements[0][0], flipped[0][0])


def _grads(module: torch.nn.Module) -> dict[str, torch.Tensor | None]:
    return {name: (p.grad.clone() if p.grad is not None else None) for name, p in module.named_parameters()}


def test_each_side_gets_only_its_own_gradients():
    """One backward pass of the combined loss gives the discriminators exactly the gradients of
    their own loss, and the generator exactly those of its losses."""
    torch.manual_seed(0)
    recipe = conv_recipe(adversarial_start=0)
    original = build_audio_vqvae(recipe.model, 2, build_spectral_loss(recipe.train, 16000))
    original_critic = build_critic(recipe.train)
    original_critic.active = True
    batch = {"audio": torch.randn(2, 512).clamp(-1, 1) * 0.3, "speaker": torch.tensor([0, 1])}

    def fresh():  # training changes the codebook (random initialisation, EMA): every pass starts alike
        torch.manual_seed(1)
        return copy.deepcopy(original), copy.deepcopy(original_critic)

    model, critic = fresh()
    loss, metrics = model.training_step(batch, critic)
    loss.backward()
    both_model, both_critic = _grads(model), _grads(critic)
    assert {"adversarial", "feature_matching", "discriminator", "mel", "stft"} <= set(metrics)
    assert all(g is not None and g.any() for g in both_critic.values())

    # The discriminators' loss alone, from the same generated audio.
    model, critic = fresh()
    out = model(batch["audio"], batch["speaker"])
    real, fake = critic(batch["audio"]), critic(out.audio.detach())
    sum(critic._disc_loss(r, f) for (r, _), (f, _) in zip(real, fake)).backward()
    assert all(g is None for g in _grads(model).values())
    for name, grad in _grads(critic).items():
        torch.testing.assert_close(grad, both_critic[name], msg=name)

    # The generator's losses alone: the same gradients for the model, and none for the critic.
    model, critic = fresh()
    out = model(batch["audio"], batch["speaker"])
    spectral, _ = model.spectral_loss(out.audio, batch["audio"])
    adversarial = sum(critic._gen_loss(logits) for logits, _ in critic._frozen(out.audio))
    real_maps = [maps for _, maps in critic(batch["audio"])]
    fake_maps = [maps for _, maps in critic._frozen(out.audio)]
    features = sum(F.l1_loss(f, r.detach()) for rs, fs in zip(real_maps, fake_maps) for r, f in zip(rs, fs))
    (spectral + out.quantizer.loss + critic.adversarial_weight * adversarial + critic.feature_weight * features).backward()
    assert all(g is None for g in _grads(critic).values())
    for name, grad in _grads(model).items():
        if grad is None:
            assert both_model[name] is None, name
        else:
            torch.testing.assert_close(grad, both_model[name], msg=name)


def test_a_step_moves_the_discriminators_only_once_adversarial_training_starts(tmp_path):
    recipe = conv_recipe(steps=2, adversarial_start=1, runs_dir=str(tmp_path / "runs"))
    setup = build_setup(recipe)
    trainer = Trainer(setup, recipe, tmp_path / "run", CPU, show_progress=False)
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    before = {k: v.clone() for k, v in setup.critic.state_dict().items()}
    model_before = {k: v.clone() for k, v in setup.model.state_dict().items()}
    metrics, _ = trainer._train_step()
    assert "discriminator" not in metrics
    assert all(torch.equal(v, setup.critic.state_dict()[k]) for k, v in before.items())
    assert any(not torch.equal(v, setup.model.state_dict()[k]) for k, v in model_before.items())
    metrics, _ = trainer._train_step()
    assert {"adversarial", "feature_matching", "discriminator"} <= set(metrics)
    assert any(not torch.equal(v, setup.critic.state_dict()[k]) for k, v in before.items())


def test_resume_with_two_optimisers_is_exact(tmp_path):
    straight = train(conv_recipe(steps=6, adversarial_start=2, runs_dir=str(tmp_path / "a")), CPU, show_progress=False)
    first = train(conv_recipe(steps=3, adversarial_start=2, runs_dir=str(tmp_path / "b")), CPU, show_progress=False)
    resumed = train(resume_recipe(first.run_dir, ["train.steps=6"]), CPU, first.run_dir, show_progress=False)
    a, b = load_checkpoint(straight.checkpoint), load_checkpoint(resumed.checkpoint)
    for part in ("model", "critic"):
        assert a[part].keys() == b[part].keys()
        for key, value in a[part].items():
            assert torch.equal(value, b[part][key]), (part, key)
    assert a["critic_optimizer"]["state"][0]["step"] == b["critic_optimizer"]["state"][0]["step"] == 4
    assert a["optimizer"]["state"][0]["step"] == 6


def test_every_loss_term_is_logged(tmp_path):
    result = train(conv_recipe(steps=4, adversarial_start=2, runs_dir=str(tmp_path / "runs")), CPU, show_progress=False)
    lines = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    train_lines = [line for line in lines if line["split"] == "train"]
    assert {"mel", "stft", "commitment", "loss"} <= set(train_lines[0]) and "discriminator" not in train_lines[0]
    assert {"adversarial", "feature_matching", "discriminator"} <= set(train_lines[-1])
    valid = [line for line in lines if line["split"] == "valid"]
    assert valid and {"mel", "stft"} <= set(valid[-1])


def test_recipe_errors_name_the_key():
    data = tiny_dict(train={"adversarial_start": 10})
    with pytest.raises(VQAudioError, match="train.adversarial_start applies to a conv decoder"):
        validate_recipe(data, "r")
    data = conv_dict()
    data["model"]["decoder"]["strides"] = [4, 4]
    with pytest.raises(VQAudioError, match=r"model.decoder.strides \[4, 4\] multiply to 16, not the hop"):
        validate_recipe(data, "r")
    data = conv_dict(adversarial_start=0, discriminator={**SMALL_CRITIC, "stft_windows": [1024]})
    with pytest.raises(VQAudioError, match="longer than data.crop_samples"):
        validate_recipe(data, "r")


@pytest.fixture(scope="module")
def trained_conv(tmp_path_factory: pytest.TempPathFactory):
    work = tmp_path_factory.mktemp("conv")
    return work, train_in(work, conv_dict(adversarial_start=2), "train.steps=3")


def test_every_command_works_with_the_conv_decoder(trained_conv, tmp_path):
    import soundfile as sf

    work, checkpoint = trained_conv
    rng = np.random.default_rng(0)
    wav = tmp_path / "in.wav"
    sf.write(wav, (0.3 * np.sin(np.arange(3000) * 0.05) + 0.01 * rng.standard_normal(3000)).astype(np.float32), 16000)
    c = str(checkpoint)
    invoke("encode", str(wav), str(tmp_path / "codes.npy"), "-c", c)
    invoke("decode", str(tmp_path / "codes.npy"), str(tmp_path / "out.wav"), "-c", c)
    out, sr = sf.read(tmp_path / "out.wav")
    assert sr == 16000 and out.shape == (3000,)
    invoke("decode", str(tmp_path / "codes.npy"), str(tmp_path / "again.wav"), "-c", c, "--seed", "7")
    assert np.array_equal(sf.read(tmp_path / "again.wav")[0], out)  # deterministic: no sampling
    invoke("convert", str(wav), str(tmp_path / "conv.wav"), "--speaker", "1", "-c", c)
    assert not np.array_equal(sf.read(tmp_path / "conv.wav")[0], out)
    assert "decoder: conv, 16 channels, upsampling 2 x 4, snake" in invoke("info", c).output
    invoke("eval", "-c", c, "--max-clips", "2", "--metrics", "si_snr,log_mel_distance", "--no-baselines", "--json", str(tmp_path / "e.json"))
    report = json.loads((tmp_path / "e.json").read_text())
    assert report["systems"][0]["nll_bits_per_sample"] is None
    run = checkpoint.parent.parent
    invoke("plot", str(run))
    assert {"training_curves.png", "codebook_usage.png"} <= {p.name for p in (run / "plots").glob("*.png")}
