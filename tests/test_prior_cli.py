"""The prior end to end: train it on a VQ-VAE's codes, sample speech, convert voices, .vqa files."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml
from conftest import invoke, run_main

from vqaudio.formats.codes import read_codes
from vqaudio.inference.entropy import entropy_decode
from vqaudio.inference.load import load_prior


def prior_recipe(vqvae: Path, steps: int) -> dict:
    return {
        "name": "tinyprior",
        "seed": 0,
        "model": {"kind": "code_prior"},
        "prior": {"vqvae": str(vqvae), "crop_frames": 64, "layers": 4, "stacks": 1, "residual_channels": 16,
                  "gate_channels": 32, "skip_channels": 16, "speaker_dim": 4},
        "train": {"steps": steps, "batch_size": 8, "lr": 0.01, "log_every": 10, "valid_every": steps,
                  "checkpoint_every": steps},
    }


@pytest.fixture(scope="module")
def prior_run(trained, tmp_path_factory):
    """A tiny prior trained on the tiny VQ-VAE's codes: (work folder, prior checkpoint, VQ-VAE checkpoint)."""
    work, vqvae = trained
    folder = tmp_path_factory.mktemp("prior")
    (folder / "prior.yaml").write_text(yaml.safe_dump(prior_recipe(vqvae, 40)))
    invoke("train", str(folder / "prior.yaml"), f"train.runs_dir={folder / 'runs'}", "--quiet", "--device", "cpu")
    checkpoint = sorted((folder / "runs" / "tinyprior").glob("*/checkpoints/step_*.pt"))[-1]
    return folder, checkpoint, vqvae


def test_prior_learns_below_log2_k_and_caches_codes(prior_run):
    folder, checkpoint, vqvae = prior_run
    payload = torch.load(checkpoint, weights_only=True)
    assert payload["kind"] == "code_prior" and payload["metadata"]["vqvae_checkpoint"] == str(vqvae.resolve())
    logged = [json.loads(line) for line in (checkpoint.parent.parent / "metrics.jsonl").read_text().splitlines()]
    valid = [r for r in logged if r["split"] == "valid"]
    assert valid and valid[-1]["bits_per_code"] < math.log2(32)  # K = 32: below the uniform prior
    assert payload["metadata"]["valid_ids"] == torch.load(vqvae, weights_only=True)["metadata"]["valid_ids"]
    cache = Path(payload["metadata"]["code_cache"])
    assert cache.parent == vqvae.resolve().parent.parent / "codes" and cache.exists()
    saved = yaml.safe_load((checkpoint.parent.parent / "recipe.yaml").read_text())
    assert "data" not in saved and saved["prior"]["vqvae"] == str(vqvae)


def test_sample_writes_decodable_files_and_repeats_under_a_seed(prior_run, tmp_path, capsys):
    folder, checkpoint, vqvae = prior_run
    args = ["sample", "--speaker", "demo1", "--seconds", "0.1", "-n", "2", "-c", str(checkpoint), "--seed", "4"]
    invoke(*args, "-o", str(tmp_path / "a"))
    invoke(*args, "-o", str(tmp_path / "b"))
    for i in range(2):
        audio, rate = sf.read(tmp_path / "a" / f"demo1_seed4_{i}.wav")
        assert rate == 8000 and audio.shape == (800,)
        codes, side = read_codes(tmp_path / "a" / f"demo1_seed4_{i}.npy")
        assert codes.shape == (1, 100) and side.speaker == "demo1" and side.num_samples == 800
        assert (tmp_path / "a" / f"demo1_seed4_{i}.wav").read_bytes() == (tmp_path / "b" / f"demo1_seed4_{i}.wav").read_bytes()
        np.testing.assert_array_equal(codes, read_codes(tmp_path / "b" / f"demo1_seed4_{i}.npy")[0])
    first, second = (np.load(tmp_path / "a" / f"demo1_seed4_{i}.npy") for i in range(2))
    assert not np.array_equal(first, second)  # two different samples in one batch
    invoke("decode", str(tmp_path / "a" / "demo1_seed4_0.npy"), str(tmp_path / "re.wav"), "-c", str(vqvae))
    code, output = run_main(capsys, *args, "-o", str(tmp_path / "a"))
    assert code == 2 and "already exists; pass --force" in output
    code, output = run_main(capsys, "sample", "--speaker", "nobody", "-c", str(checkpoint), "-o", str(tmp_path / "c"))
    assert code == 2 and "--speaker 'nobody': not a speaker of this model" in output
    code, output = run_main(capsys, "sample", "-c", str(vqvae), "-o", str(tmp_path / "c"))
    assert code == 2 and "not a code prior" in output


def test_convert_changes_the_voice_keeps_the_length(prior_run, tmp_path):
    _, _, vqvae = prior_run
    clip = tmp_path / "clip.wav"
    invoke("demo-clip", str(clip), "--seconds", "0.5", "--sample-rate", "8000")
    invoke("convert", str(clip), str(tmp_path / "as1.wav"), "--speaker", "demo1", "-c", str(vqvae))
    invoke("convert", str(clip), str(tmp_path / "as0.wav"), "--speaker", "0", "-c", str(vqvae))
    one, rate = sf.read(tmp_path / "as1.wav")
    zero, _ = sf.read(tmp_path / "as0.wav")
    assert rate == 8000 and one.shape == zero.shape == (4000,)
    assert not np.array_equal(one, zero)


def test_entropy_coded_file_round_trips_through_the_cli(prior_run, tmp_path, capsys):
    _, prior_ckpt, vqvae = prior_run
    clip = tmp_path / "demo0_clip.wav"
    invoke("demo-clip", str(clip), "--seconds", "0.6", "--sample-rate", "8000", "--seed", "3")
    invoke("encode", str(clip), str(tmp_path / "plain.npy"), "-c", str(vqvae))
    result = invoke("encode", str(clip), str(tmp_path / "c.vqa"), "--entropy", "--prior", str(prior_ckpt))
    assert "bit/s" in result.output
    prior = load_prior(prior_ckpt, torch.device("cpu"))
    codes, header = entropy_decode(prior, (tmp_path / "c.vqa").read_bytes(), tmp_path / "c.vqa")
    plain, side = read_codes(tmp_path / "plain.npy")
    np.testing.assert_array_equal(codes, plain)  # exactly the codes `vqaudio encode` gives
    assert header.num_samples == side.num_samples == 4800 and prior.codec.speakers[header.speaker_index] == "demo0"
    invoke("decode", str(tmp_path / "c.vqa"), str(tmp_path / "from_vqa.wav"), "--prior", str(prior_ckpt))
    invoke("decode", str(tmp_path / "plain.npy"), str(tmp_path / "from_npy.wav"), "-c", str(vqvae))
    assert (tmp_path / "from_vqa.wav").read_bytes() == (tmp_path / "from_npy.wav").read_bytes()
    broken = tmp_path / "broken.vqa"
    broken.write_bytes((tmp_path / "c.vqa").read_bytes()[:-4])
    code, output = run_main(capsys, "decode", str(broken), str(tmp_path / "x.wav"), "--prior", str(prior_ckpt))
    assert code == 2 and f"{broken}: truncated" in output and not (tmp_path / "x.wav").exists()
    code, output = run_main(capsys, "encode", str(clip), str(tmp_path / "d.vqa"), "--entropy", "--prior", str(vqvae))
    assert code == 2 and "not a code prior" in output


def test_eval_and_info_put_raw_prior_and_coded_bitrates_side_by_side(prior_run, tmp_path):
    _, prior_ckpt, vqvae = prior_run
    clips = tmp_path / "clips"
    clips.mkdir()
    invoke("demo-clip", str(clips / "demo1_a.wav"), "--speaker", "1", "--seconds", "0.5", "--sample-rate", "8000")
    report_path = tmp_path / "r.json"
    result = invoke("eval", "-c", str(prior_ckpt), "--data", str(clips), "--no-baselines", "--json", str(report_path))
    report = json.loads(report_path.read_text())
    model = report["systems"][0]
    assert report["fingerprint"] == torch.load(vqvae, weights_only=True)["fingerprint"]  # the prior's VQ-VAE
    row = report["clips"][0]
    assert model["bitrate"] == 5000 and model["prior_checkpoint"] == str(prior_ckpt)
    assert model["entropy_coded_bitrate"] == pytest.approx(8 * row["vqa_bytes"] / 0.5)
    assert model["prior_bits_per_code"] == pytest.approx(row["prior_bits_per_code"])
    assert model["prior_bitrate"] == pytest.approx(model["prior_bits_per_code"] * 1000)
    assert 0 < model["nll_bits_per_sample"] < 8  # μ-law: 8 bits is a uniform guess
    assert model["bits_per_sample_under_prior"] == pytest.approx(model["nll_bits_per_sample"] + model["prior_bitrate"] / 8000)
    assert "bitrate side by side: raw 5000 bit/s" in result.output
    info = invoke("info", str(prior_ckpt)).output
    info = " ".join(info.split())
    assert "bits per code (raw 5)" in info and "under the prior" in info


def test_a_sample_of_odd_length_has_codes_and_sidecar_that_agree(prior_run, tmp_path):
    _, checkpoint, vqvae = prior_run
    invoke("sample", "--seconds", "0.0101", "-c", str(checkpoint), "-o", str(tmp_path))  # 80.8 samples at 8 kHz
    codes, side = read_codes(tmp_path / "demo0_seed0_0.npy")
    assert side.num_samples == 81 and codes.shape == (1, 11)  # hop 8: 11 frames cover 81 samples
    assert sf.info(tmp_path / "demo0_seed0_0.wav").frames == 81
    invoke("decode", str(tmp_path / "demo0_seed0_0.npy"), str(tmp_path / "again.wav"), "-c", str(vqvae))
