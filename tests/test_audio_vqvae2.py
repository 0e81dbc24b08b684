"""Two-level audio codes (VQ-VAE-2 on waveforms): the model, the .npz codes file, both priors, and
encode / decode / sample / eval / info end to end through the CLI."""

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml
from conftest import invoke, run_main, tiny_dict

from vqaudio.errors import VQAudioError
from vqaudio.formats.codes import read_code_levels
from vqaudio.generation.decode import iter_decode
from vqaudio.inference.load import load_codec, load_prior
from vqaudio.models.audio_vqvae import AudioVQVAE
from vqaudio.models.build import build_audio_vqvae
from vqaudio.models.streaming import encode_audio
from vqaudio.recipe import validate_recipe

TOP = {"downsample_layers": 2, "channels": 16, "residual_layers": 1, "codebook_size": 16, "dim": 8}


def two_level_dict(**model) -> dict:
    return tiny_dict(data={"sample_rate": 8000}, model={**tiny_dict()["model"], "top": TOP, **model})


def make_model() -> AudioVQVAE:
    torch.manual_seed(0)
    return build_audio_vqvae(validate_recipe(two_level_dict(), "t").model, 2)


def test_two_level_codes_have_two_rates_and_gradients_reach_both_encoders():
    model = make_model()
    audio = 0.3 * torch.randn(2, 512)
    loss, metrics = model.training_step({"audio": audio, "speaker": torch.tensor([0, 1])})
    loss.backward()
    for name in ("encoder.net.0.weight", "top.encoder.net.0.weight", "top.expand_net.0.weight", "top.to_bottom.weight"):
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name
    assert metrics["code_counts"].shape == (1, 32) and metrics["top_code_counts"].shape == (1, 16)
    assert metrics["top_code_counts"].sum() == 2 * 512 // 32  # one top code per 32 samples (hop 8 x ratio 4)
    summary = AudioVQVAE.summarize_metrics(metrics)
    assert 1 <= summary["top_codes_used"] <= 16 and summary["top_perplexity"] >= 1
    model.eval()
    bottom, top = model.encode_levels(audio)
    assert bottom.shape == (2, 1, 64) and top.shape == (2, 1, 16) and model.ratio == 4
    assert torch.equal(model.encode(audio), bottom)


def test_bottom_codes_and_decoder_depend_on_the_top_level():
    model = make_model().eval()
    audio = 0.3 * torch.randn(1, 512)
    bottom, top = model.encode_levels(audio)
    with torch.no_grad():  # the bottom quantiser's input includes the top's view: change it, the bottom codes move
        model.top.to_bottom.weight.mul_(5.0)
    assert not torch.equal(model.encode_levels(audio)[0], bottom)
    other_top = (top + 1) % 16
    a = model.latent_conditioning(bottom, 0, 64, top)
    b = model.latent_conditioning(bottom, 0, 64, other_top)
    assert not torch.allclose(a, b)  # the decoder is conditioned on both levels
    with pytest.raises(ValueError, match="top codes must be given"):
        next(iter_decode(model, bottom, torch.tensor([0])))
    with pytest.raises(ValueError, match="top frames"):
        next(iter_decode(model, bottom, torch.tensor([0]), top=top[..., :3]))


def test_eval_decoder_nll_is_the_training_nll_in_bits():
    from vqaudio.evaluation.evaluate import decoder_nll_bits
    from vqaudio.inference.load import Codec

    model = make_model().eval()
    codec = Codec(model, Path("m.pt"), "f" * 16, 0, 8000, ["a", "b"], {}, torch.device("cpu"))
    audio = 0.3 * torch.randn(512)
    with torch.no_grad():
        _, metrics = model.training_step({"audio": audio[None], "speaker": torch.tensor([1])})
    expected = float(metrics["nll"]) * 512 / math.log(2)
    assert decoder_nll_bits(codec, audio.numpy(), 1) == pytest.approx(expected, rel=1e-5)
    assert decoder_nll_bits(codec, audio.numpy(), 0) != pytest.approx(expected, rel=1e-5)  # the speaker counts


@pytest.mark.parametrize(
    "change, message",
    [
        ({"quantizer": {"codebook_size": 32, "dim": 8, "n_q": 2}}, "one bottom codebook"),
        ({"kind": "code_prior"}, "belongs to model.kind audio_vqvae"),
    ],
)
def test_two_level_recipe_errors(change, message):
    data = two_level_dict(**change)
    if change.get("kind") == "code_prior":
        data["prior"] = {"vqvae": "newest"}
        del data["data"]
    with pytest.raises(VQAudioError, match=message):
        validate_recipe(data, "r.yaml")


def test_two_level_crops_are_whole_top_frames():
    validate_recipe(two_level_dict(), "r.yaml")  # 512 samples: 16 top frames of 32
    crop = two_level_dict()
    crop["data"]["crop_samples"] = 8 * 10  # a whole number of bottom frames, not of top frames
    with pytest.raises(VQAudioError, match="multiple of 32, the samples per top code"):
        validate_recipe(crop, "r.yaml")


def prior_dict(name: str, level: str | None, steps: int = 30) -> dict:
    prior = {"vqvae": "newest", "crop_frames": 32, "layers": 4, "stacks": 1, "residual_channels": 16,
             "gate_channels": 32, "skip_channels": 16, "speaker_dim": 4, "condition_blocks": 2}  # fmt: skip
    if level:
        prior["level"] = level
    return {
        "name": name,
        "model": {"kind": "code_prior"},
        "prior": prior,
        "train": {"steps": steps, "batch_size": 8, "lr": 0.01, "log_every": 10, "valid_every": steps, "checkpoint_every": steps},
    }


@pytest.fixture(scope="module")
def two_level_run(tmp_path_factory):
    """A tiny two-level model and its top and bottom priors, trained through the CLI in one work folder."""
    work = tmp_path_factory.mktemp("vqvae2")
    (work / "vq.yaml").write_text(yaml.safe_dump({**two_level_dict(), "name": "tiny2"}))
    (work / "top.yaml").write_text(yaml.safe_dump(prior_dict("top", "top")))
    (work / "bottom.yaml").write_text(yaml.safe_dump(prior_dict("bottom", "bottom")))
    old = os.getcwd()
    os.chdir(work)
    try:
        invoke("train", "vq.yaml", "train.steps=4", "--quiet", "--device", "cpu")
        invoke("train", "top.yaml", "--quiet", "--device", "cpu")
        invoke("train", "bottom.yaml", "--quiet", "--device", "cpu")
    finally:
        os.chdir(old)
    found = {name: sorted((work / "runs" / name).glob("*/checkpoints/step_*.pt"))[-1] for name in ("tiny2", "top", "bottom")}
    invoke("demo-clip", str(work / "clip.wav"), "--seconds", "0.7", "--sample-rate", "8000", "--speaker", "1")
    return work, found


def test_a_top_prior_finds_its_bottom_partner_without_reading_any_weights(two_level_run, monkeypatch):
    from vqaudio.formats import checkpoint as checkpoint_module
    from vqaudio.inference.priors import find_partner

    work, found = two_level_run
    vq_fingerprint = load_prior(found["bottom"], torch.device("cpu")).codec.fingerprint

    def refuse(*args, **kwargs):
        raise AssertionError("a checkpoint's weights were read or hashed while searching")

    monkeypatch.setattr(checkpoint_module, "model_fingerprint", refuse)
    monkeypatch.setattr(checkpoint_module, "load_checkpoint", refuse)
    assert find_partner(work / "runs", "code_prior", "bottom", vq_fingerprint) == found["bottom"]
    assert find_partner(work / "runs", "code_prior", "top", vq_fingerprint) == found["top"]
    assert find_partner(work / "runs", "code_prior", "bottom", "0" * 16) is None


def test_priors_know_their_level_and_the_bottom_one_is_conditioned(two_level_run):
    work, found = two_level_run
    top, bottom = load_prior(found["top"], torch.device("cpu")), load_prior(found["bottom"], torch.device("cpu"))
    assert top.level == "top" and bottom.level == "bottom"
    assert top.model.codebook_size == 16 and top.model.condition is None
    assert bottom.model.codebook_size == 32 and bottom.model.condition is not None and bottom.model.condition_ratio == 4
    assert top.code_rate == 8000 / 32 and bottom.code_rate == 8000 / 8
    for prior, k in ((top, 16), (bottom, 32)):
        assert prior.valid["bits_per_code"] < math.log2(k)  # learned something beyond the uniform prior


def test_encode_writes_npz_with_both_levels_and_decode_restores_the_length(two_level_run, tmp_path, capsys):
    work, found = two_level_run
    vq = str(found["tiny2"])
    code, output = run_main(capsys, "encode", str(work / "clip.wav"), str(tmp_path / "c.npy"), "-c", vq)
    assert code == 2 and "two-level model, whose codes are written as a .npz" in output and "c.npz" in output
    invoke("encode", str(work / "clip.wav"), str(tmp_path / "c.npz"), "-c", vq)
    codes, top, side = read_code_levels(tmp_path / "c.npz")
    assert side.version == 2 and side.ratio == 4 and side.top.model_dump() == {"codebook_size": 16, "hop": 32, "frames": 175}
    assert codes.shape == (1, 700) and top.shape == (1, 175)  # 5,600 samples: 700 frames of 8, 175 of 32
    assert side.bitrate == pytest.approx(1000 * 5 + 250 * 4)
    plain = np.load(tmp_path / "c.npz", allow_pickle=False)  # readable with plain NumPy
    assert np.array_equal(plain["top"], top[0]) and np.array_equal(plain["bottom"], codes[0])
    codec = load_codec(found["tiny2"], torch.device("cpu"))
    audio, _ = sf.read(work / "clip.wav", dtype="float32")
    direct = encode_audio(codec.model, audio)
    assert np.array_equal(direct[0], codes) and np.array_equal(direct[1], top)
    for name in ("a.wav", "b.wav"):
        invoke("decode", str(tmp_path / "c.npz"), str(tmp_path / name), "-c", vq, "--temperature", "0")
    decoded, rate = sf.read(tmp_path / "a.wav")
    assert rate == 8000 and decoded.shape == audio.shape
    assert (tmp_path / "a.wav").read_bytes() == (tmp_path / "b.wav").read_bytes()
    # voice conversion = encoding both levels, then decoding them as another speaker
    invoke("convert", str(work / "clip.wav"), str(tmp_path / "as0.wav"), "--speaker", "0", "-c", vq, "--temperature", "0")
    invoke("decode", str(tmp_path / "c.npz"), str(tmp_path / "d0.wav"), "-c", vq, "--temperature", "0", "--speaker", "0")
    assert sf.read(tmp_path / "as0.wav")[0].shape == audio.shape
    assert (tmp_path / "as0.wav").read_bytes() == (tmp_path / "d0.wav").read_bytes()
    # one-level codes given to a two-level model, and damaged two-level files: one-line errors
    np.save(tmp_path / "one.npy", codes[0])
    (tmp_path / "one.npy.json").write_text(json.dumps({**side.model_dump(mode="json"), "version": 1, "n_q": 1}))
    code, output = run_main(capsys, "decode", str(tmp_path / "one.npy"), str(tmp_path / "x.wav"), "-c", vq)
    assert code == 2 and "holds one-level codes but" in output
    np.savez(tmp_path / "bad.npz", bottom=codes[0], top=top[0][:-1])
    (tmp_path / "bad.npz.json").write_text(side.to_json())
    code, output = run_main(capsys, "decode", str(tmp_path / "bad.npz"), str(tmp_path / "x.wav"), "-c", vq)
    assert code == 2 and "174 top frames but the sidecar says 175" in output
    np.savez_compressed(tmp_path / "packed.npz", bottom=codes[0], top=top[0])
    (tmp_path / "packed.npz.json").write_text(side.to_json())
    code, output = run_main(capsys, "decode", str(tmp_path / "packed.npz"), str(tmp_path / "x.wav"), "-c", vq)
    assert code == 2 and "is compressed" in output
    (tmp_path / "cut.npz").write_bytes((tmp_path / "c.npz").read_bytes()[:300])
    (tmp_path / "cut.npz.json").write_text(side.to_json())
    code, output = run_main(capsys, "decode", str(tmp_path / "cut.npz"), str(tmp_path / "x.wav"), "-c", vq)
    assert code == 2 and "cut.npz: not a two-level codes file (not a .npz archive)" in output
    data = bytearray((tmp_path / "c.npz").read_bytes())
    data[data.index(b"\x93NUMPY") + 300] ^= 0x40  # a code inside the first member: the zip CRC catches it
    (tmp_path / "flip.npz").write_bytes(bytes(data))
    (tmp_path / "flip.npz.json").write_text(side.to_json())
    code, output = run_main(capsys, "decode", str(tmp_path / "flip.npz"), str(tmp_path / "x.wav"), "-c", vq)
    assert code == 2 and "flip.npz: not a readable two-level codes file (Bad CRC-32" in output


def test_sample_draws_top_then_bottom_and_repeats_under_a_seed(two_level_run, tmp_path, capsys):
    work, found = two_level_run
    old = os.getcwd()
    os.chdir(work)  # no -c: the newest prior is the bottom one, which stands for its pair
    try:
        for out in ("a", "b"):
            invoke("sample", "--speaker", "1", "--seconds", "0.3", "-n", "2", "--seed", "3", "-o", str(tmp_path / out))
    finally:
        os.chdir(old)
    for i in range(2):
        codes, top, side = read_code_levels(tmp_path / "a" / f"demo1_seed3_{i}.npz")
        assert codes.shape == (1, 300) and top.shape == (1, 75) and side.num_samples == 2400
        assert str(found["top"]) in side.source and str(found["bottom"]) in side.source
        audio, rate = sf.read(tmp_path / "a" / f"demo1_seed3_{i}.wav")
        assert audio.shape == (2400,) and rate == 8000
        again = tmp_path / "b" / f"demo1_seed3_{i}.wav"
        assert (tmp_path / "a" / f"demo1_seed3_{i}.wav").read_bytes() == again.read_bytes()
    tops = [read_code_levels(tmp_path / "a" / f"demo1_seed3_{i}.npz")[1] for i in range(2)]
    assert not np.array_equal(*tops)
    args = ["--speaker", "1", "--seconds", "0.3", "-o", str(tmp_path / "c")]
    explicit = ["sample", *args, "-c", str(found["top"]), "--bottom", str(found["bottom"]), "--seed", "3", "-n", "2"]
    invoke(*explicit)
    assert (tmp_path / "c" / "demo1_seed3_0.wav").read_bytes() == (tmp_path / "a" / "demo1_seed3_0.wav").read_bytes()
    code, output = run_main(capsys, "sample", *args, "-c", str(found["bottom"]))
    assert code == 2 and "a bottom prior; give the top prior (-c)" in output
    code, output = run_main(capsys, "sample", *args, "-c", str(found["top"]), "--bottom", str(found["top"]))
    assert code == 2 and "not a bottom prior" in output


def test_eval_scores_both_levels_under_the_hierarchy_of_priors(two_level_run, tmp_path):
    work, found = two_level_run
    invoke("eval", "-c", str(found["top"]), "--data", str(work / "clip.wav"), "--no-baselines", "--json", str(tmp_path / "r.json"))
    report = json.loads((tmp_path / "r.json").read_text())
    model = report["systems"][0]
    assert model["bitrate"] == pytest.approx(1000 * 5 + 250 * 4) and model["top_bitrate"] == pytest.approx(1000)
    assert report["top_codebook_usage"]["codebook_size"] == 16 and report["codebook_usage"]["codebook_size"] == 32
    row = report["clips"][0]
    seconds = report["seconds"]
    assert seconds == pytest.approx(0.7)
    assert model["prior_bitrate"] == pytest.approx((row["prior_bits_top"] + row["prior_bits_bottom"]) / seconds)
    assert model["prior_bits_per_top_code"] == pytest.approx(row["prior_bits_top"] / 175)
    assert model["prior_bits_per_bottom_code"] == pytest.approx(row["prior_bits_bottom"] / 700)
    assert 0 < model["nll_bits_per_sample"] < 8 and row["nll_bits_per_sample"] == pytest.approx(model["nll_bits_per_sample"])
    bound = model["nll_bits_per_sample"] + model["prior_bitrate"] / 8000
    assert model["bits_per_sample_under_prior"] == pytest.approx(bound)
    assert model["entropy_coded_bitrate"] == pytest.approx(8 * row["vqa_bytes"] / seconds)


def test_entropy_coded_two_level_files_round_trip_through_the_cli(two_level_run, tmp_path, capsys):
    work, found = two_level_run
    top = str(found["top"])
    result = invoke("encode", str(work / "clip.wav"), str(tmp_path / "c.vqa"), "--entropy", "--prior", top)
    assert "bit/s" in result.output
    invoke("encode", str(work / "clip.wav"), str(tmp_path / "c.npz"), "-c", str(found["tiny2"]))
    data = (tmp_path / "c.vqa").read_bytes()
    assert data[:8] == b"VQAUDIO\x00" and data[8] == 2  # version 2: two levels
    for source, name in ((tmp_path / "c.vqa", "from_vqa.wav"), (tmp_path / "c.npz", "from_npz.wav")):
        extra = ["--prior", top] if source.suffix == ".vqa" else ["-c", str(found["tiny2"])]
        invoke("decode", str(source), str(tmp_path / name), *extra, "--temperature", "0")
    # the .vqa file holds exactly the codes of the .npz: the decoded audio is identical
    assert (tmp_path / "from_vqa.wav").read_bytes() == (tmp_path / "from_npz.wav").read_bytes()
    explicit = ["decode", str(tmp_path / "c.vqa"), str(tmp_path / "x.wav"), "--prior", top]
    code, output = run_main(capsys, *explicit, "--bottom", top)
    assert code == 2 and "not a bottom prior" in output
    code, output = run_main(capsys, "decode", str(tmp_path / "c.npz"), str(tmp_path / "x.wav"), "--bottom", top)
    assert code == 2 and "--bottom: the bottom prior is for .vqa files" in output


def test_info_and_level_errors(two_level_run, trained, tmp_path, capsys):
    work, found = two_level_run
    result = invoke("info", str(found["tiny2"]))
    assert "two levels" in result.output and "K = 16" in result.output
    assert "bottom codes of a two-level model, given the top codes" in invoke("info", str(found["bottom"])).output
    (tmp_path / "p.yaml").write_text(yaml.safe_dump({**prior_dict("p", None, 2), "prior": {**prior_dict("p", None)["prior"], "vqvae": str(found["tiny2"])}}))
    code, output = run_main(capsys, "train", str(tmp_path / "p.yaml"), f"train.runs_dir={tmp_path / 'runs'}", "--quiet")
    assert code == 2 and "is a two-level VQ-VAE: set prior.level to top or bottom" in output
    _, one_level = trained
    code, output = run_main(capsys, "train", str(tmp_path / "p.yaml"), f"prior.vqvae={one_level}", "prior.level=top",
                            f"train.runs_dir={tmp_path / 'runs'}", "--quiet")  # fmt: skip
    assert code == 2 and "is a one-level VQ-VAE; remove prior.level" in output


def test_bottom_prior_batches_pair_each_crop_with_the_top_codes_above_it():
    from vqaudio.models.code_prior import IGNORE
    from vqaudio.tasks.code_corpus import CodeCorpus
    from vqaudio.tasks.code_prior import code_batch, top_level_view

    rng = np.random.default_rng(0)
    offsets = np.array([0, 16, 40])  # two utterances: 16 and 24 bottom frames (4 and 6 top frames)
    corpus = CodeCorpus(["a", "b"], np.array([0, 1]), offsets, rng.integers(0, 32, (1, 40)), [], [0, 1],
                        top=rng.integers(0, 16, (1, 10)), ratio=4)  # fmt: skip
    batch = code_batch(corpus, [1, 0], [8, 12], 12, with_top=True)
    assert batch["codes"].shape == (2, 1, 12) and batch["top"].shape == (2, 1, 3)
    assert np.array_equal(batch["codes"][0, 0], corpus.codes[0, 24:36])
    assert np.array_equal(batch["top"][0, 0], corpus.top[0, 6:9])  # utterance b's top frames 2..4
    assert np.array_equal(batch["codes"][1, 0, :4], corpus.codes[0, 12:16]) and (batch["codes"][1, 0, 4:] == IGNORE).all()
    assert batch["top"][1, 0, 0] == corpus.top[0, 3] and (batch["top"][1, 0, 1:] == IGNORE).all()
    top = top_level_view(corpus)
    assert np.array_equal(top.utterance(1), corpus.top[:, 4:10]) and top.frames(0) == 4
