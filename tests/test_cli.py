"""The command line end to end: train a tiny model, encode real speech, decode it, inspect it."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml
from conftest import invoke, tiny_dict
from typer.testing import CliRunner

runner = CliRunner()


def encode_demo_clip(folder: Path, checkpoint: Path) -> Path:
    """A 0.3 s demo clip encoded to folder/c.npy (+ sidecar); returns the codes path."""
    clip = folder / "clip.wav"
    invoke("demo-clip", str(clip), "--seconds", "0.3", "--sample-rate", "8000")
    invoke("encode", str(clip), str(folder / "c.npy"), "-c", str(checkpoint))
    return folder / "c.npy"


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vqaudio", *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_round_trip_of_a_real_vctk_file(trained, shared_data, tmp_path):
    _, checkpoint = trained
    source = shared_data / "vctk_mini" / "wav48" / "p317" / "p317_166.wav"
    codes_path = tmp_path / "codes.npy"
    invoke("encode", str(source), str(codes_path), "-c", str(checkpoint))
    codes = np.load(codes_path, allow_pickle=False)
    side = json.loads((tmp_path / "codes.npy.json").read_text())
    original = sf.info(source)
    expected_samples = round(original.frames * 8000 / original.samplerate)
    assert abs(side["num_samples"] - expected_samples) <= 1
    assert codes.ndim == 1 and codes.size == -(-side["num_samples"] // 8) and codes.dtype.kind == "i"
    assert side["sample_rate"] == 8000 and side["hop"] == 8 and side["codebook_size"] == 32
    assert side["version"] == 1 and len(side["fingerprint"]) == 16 and side["speaker"] is None
    out = tmp_path / "out.wav"
    invoke("decode", str(codes_path), str(out), "-c", str(checkpoint), "--speaker", "demo1")
    audio, rate = sf.read(out)
    assert rate == 8000 and audio.shape == (side["num_samples"],)
    assert np.unique(audio).size > 50 and audio.std() > 1e-3  # a waveform, not silence or a constant
    # Sampling is seeded: the default seed (0) again gives the same audio, another seed other audio.
    for seed in ("0", "1"):
        target = tmp_path / f"seed{seed}.wav"
        invoke("decode", str(codes_path), str(target), "-c", str(checkpoint), "--speaker", "demo1", "--seed", seed)
    assert np.array_equal(sf.read(tmp_path / "seed0.wav")[0], audio)
    assert not np.array_equal(sf.read(tmp_path / "seed1.wav")[0], audio)


def test_speaker_by_index_or_name_gives_the_same_audio(trained, tmp_path):
    _, checkpoint = trained
    clip = tmp_path / "clip.wav"
    invoke("demo-clip", str(clip), "--seconds", "0.3", "--sample-rate", "8000")
    invoke("encode", str(clip), str(tmp_path / "c.npy"), "-c", str(checkpoint), "--speaker", "demo1")
    assert json.loads((tmp_path / "c.npy.json").read_text())["speaker"] == "demo1"
    invoke("decode", str(tmp_path / "c.npy"), str(tmp_path / "a.wav"), "-c", str(checkpoint), "--speaker", "1")
    invoke("decode", str(tmp_path / "c.npy"), str(tmp_path / "b.wav"), "-c", str(checkpoint))  # sidecar's speaker
    invoke("decode", str(tmp_path / "c.npy"), str(tmp_path / "z.wav"), "-c", str(checkpoint), "--speaker", "demo0")
    a, b, z = (sf.read(tmp_path / f"{n}.wav")[0] for n in "abz")
    assert np.array_equal(a, b)
    assert not np.array_equal(a, z)


@pytest.mark.slow
def test_without_checkpoint_the_newest_run_is_used(trained, tmp_path):
    work, checkpoint = trained
    clip = tmp_path / "clip.wav"
    invoke("demo-clip", str(clip), "--seconds", "0.3", "--sample-rate", "8000")
    result = run_cli("encode", str(clip), str(tmp_path / "c.npy"), cwd=work)
    assert result.returncode == 0, result.stderr
    assert f"using checkpoint runs/tiny/{checkpoint.parent.parent.name}/checkpoints/{checkpoint.name}" in result.stderr


@pytest.mark.slow
def test_existing_output_needs_force(trained, tmp_path):
    _, checkpoint = trained
    clip = tmp_path / "clip.wav"
    invoke("demo-clip", str(clip), "--seconds", "0.3", "--sample-rate", "8000")
    target = tmp_path / "c.npy"
    target.write_bytes(b"precious")
    result = run_cli("encode", str(clip), str(target), "-c", str(checkpoint), cwd=tmp_path)
    assert result.returncode == 2
    assert "already exists; pass --force" in result.stderr and "Traceback" not in result.stderr
    assert target.read_bytes() == b"precious"
    invoke("encode", str(clip), str(target), "-c", str(checkpoint), "--force")
    assert np.load(target).size > 0


@pytest.mark.slow
def test_codes_from_another_model_are_refused(trained, tmp_path):
    _, checkpoint = trained
    encode_demo_clip(tmp_path, checkpoint)
    side_path = tmp_path / "c.npy.json"
    side = json.loads(side_path.read_text())
    side_path.write_text(json.dumps({**side, "fingerprint": "0123456789abcdef"}))
    result = run_cli("decode", str(tmp_path / "c.npy"), str(tmp_path / "o.wav"), "-c", str(checkpoint), cwd=tmp_path)
    assert result.returncode == 2 and "made by model '0123456789abcdef'" in result.stderr
    side_path.write_text(json.dumps({**side, "codebook_size": 1024}))
    result = run_cli("decode", str(tmp_path / "c.npy"), str(tmp_path / "o.wav"), "-c", str(checkpoint), cwd=tmp_path)
    assert result.returncode == 2 and "codebook of 1024" in result.stderr
    assert not (tmp_path / "o.wav").exists()
    assert len(result.stderr.strip().splitlines()) == 1


def test_out_of_range_codes_are_refused(trained, tmp_path):
    from vqaudio.errors import VQAudioError
    from vqaudio.formats.codes import read_codes
    from vqaudio.inference.codec import check_compatible
    from vqaudio.inference.load import load_codec

    _, checkpoint = trained
    encode_demo_clip(tmp_path, checkpoint)
    codes = np.load(tmp_path / "c.npy")
    codes[0] = 32
    np.save(tmp_path / "c.npy", codes)
    codec = load_codec(checkpoint, torch.device("cpu"))
    with pytest.raises(VQAudioError, match=r"codes must lie in 0\.\.31"):
        check_compatible(codec, *read_codes(tmp_path / "c.npy"), tmp_path / "c.npy")


def test_info_reports_bitrate_and_speakers(trained):
    _, checkpoint = trained
    result = invoke("info", str(checkpoint))
    text = " ".join(result.output.split())
    assert "step 3" in text and "K = 32" in text and "downsampling x8" in text
    assert "bitrate 5000 bit/s" in text  # 8000 / 8 * log2(32)
    assert "demo0" in text and "demo1" in text


@pytest.mark.slow
def test_bad_input_is_one_line_and_exit_code_2(trained, tmp_path):
    _, checkpoint = trained
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(tiny_dict(train={"stepz": 3})))
    (tmp_path / "noise.wav").write_bytes(b"not audio at all")
    cases = [
        (["train", "bad.yaml"], "unknown key 'train.stepz'"),
        (["train", "missing.yaml"], "no such recipe file"),
        (["encode", "nothing.wav", "c.npy", "-c", str(checkpoint)], "nothing.wav: no such file"),
        (["encode", "noise.wav", "c.npy", "-c", str(checkpoint)], "noise.wav: cannot read it as audio"),
        (["decode", "nothing.npy", "o.wav", "-c", str(checkpoint)], "nothing.npy: no such codes file"),
        (["info", "bad.yaml"], "bad.yaml: not a readable checkpoint"),
        (["encode", "noise.wav", "c.npy"], "no audio_vqvae checkpoint under runs/"),
        (["decode", "nothing.npy", "o.wav", "--backend", "gpu"], "--backend 'gpu': choose auto"),
    ]
    for args, message in cases:
        result = run_cli(*args, cwd=tmp_path)
        assert result.returncode == 2, (args, result.stderr)
        assert message in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / "c.npy").exists()


def test_missing_or_edited_sidecar_is_named(trained, tmp_path):
    from vqaudio.errors import VQAudioError
    from vqaudio.formats.codes import read_codes

    _, checkpoint = trained
    encode_demo_clip(tmp_path, checkpoint)
    side_path = tmp_path / "c.npy.json"
    side = json.loads(side_path.read_text())
    side_path.write_text(json.dumps({**side, "num_samples": "2400"}))
    with pytest.raises(VQAudioError, match="num_samples = '2400' has the wrong type"):
        read_codes(tmp_path / "c.npy")
    side_path.write_text(json.dumps({k: v for k, v in side.items() if k != "hop"}))
    with pytest.raises(VQAudioError, match="missing hop"):
        read_codes(tmp_path / "c.npy")
    side_path.unlink()
    with pytest.raises(VQAudioError, match=r"c\.npy\.json: missing"):
        read_codes(tmp_path / "c.npy")


@pytest.mark.slow
def test_residual_vq_picks_the_bitrate_at_encoding(tmp_path):
    """One residual-VQ model, encoded at 1 and at 3 codebooks; both decode; info lists the rates."""
    quantizer = {"codebook_size": 32, "dim": 8, "n_q": 3, "dropout": True, "init": "kmeans", "init_batches": 2,
                 "restart_threshold": 0.1}  # fmt: skip
    model = {**tiny_dict()["model"], "quantizer": quantizer}
    (tmp_path / "rvq.yaml").write_text(yaml.safe_dump(tiny_dict(data={"sample_rate": 8000}, model=model)))
    old = os.getcwd()
    os.chdir(tmp_path)
    try:
        invoke("train", "rvq.yaml", "train.steps=3", "--quiet")
    finally:
        os.chdir(old)
    checkpoint = sorted(tmp_path.glob("runs/tiny/*/checkpoints/step_*.pt"))[-1]
    clip = tmp_path / "clip.wav"
    invoke("demo-clip", str(clip), "--seconds", "0.3", "--sample-rate", "8000")
    invoke("encode", str(clip), str(tmp_path / "one.npy"), "-c", str(checkpoint), "--n-q", "1")
    invoke("encode", str(clip), str(tmp_path / "all.npy"), "-c", str(checkpoint))
    one, full = np.load(tmp_path / "one.npy"), np.load(tmp_path / "all.npy")
    assert one.shape == (300,) and full.shape == (3, 300)
    assert np.array_equal(one, full[0])  # the first codebook does not depend on how many follow
    side = json.loads((tmp_path / "all.npy.json").read_text())
    assert side["n_q"] == 3 and side["bitrate"] == 3 * 1000 * 5
    assert json.loads((tmp_path / "one.npy.json").read_text())["bitrate"] == 5000
    for name in ("one", "all"):
        invoke("decode", str(tmp_path / f"{name}.npy"), str(tmp_path / f"{name}.wav"), "-c", str(checkpoint))
        assert sf.read(tmp_path / f"{name}.wav")[0].shape == (2400,)
    result = run_cli("encode", str(clip), str(tmp_path / "x.npy"), "-c", str(checkpoint), "--n-q", "4", cwd=tmp_path)
    assert result.returncode == 2 and "this model has 3 codebook(s)" in result.stderr
    text = " ".join(invoke("info", str(checkpoint)).output.split())
    assert "3 codebooks" in text and "1: 5000, 2: 10000, 3: 15000" in text
    assert "codebook usage on the held-out set" in text


def test_a_run_folder_stands_for_its_newest_checkpoint(trained, capsys):
    """-c (and info) take a run folder as well as a checkpoint file."""
    from conftest import run_main

    work, checkpoint = trained
    run = checkpoint.parent.parent
    code, by_folder = run_main(capsys, "info", str(run))
    assert code == 0, by_folder
    from vqaudio.formats.checkpoint import read_checkpoint
    from vqaudio.inference.info import checkpoint_summary

    assert checkpoint_summary(run) == checkpoint_summary(checkpoint)
    assert read_checkpoint(checkpoint).fingerprint in " ".join(by_folder.split())
    code, output = run_main(capsys, "eval", "-c", str(run), "--no-baselines", "--max-clips", "1", "--temperature", "0")
    assert code == 0 and "decoder likelihood" in output, output
    empty = work / "empty_run"
    (empty / "checkpoints").mkdir(parents=True, exist_ok=True)
    code, output = run_main(capsys, "eval", "-c", str(empty))
    assert code == 2 and "the folder holds no checkpoints" in output
