"""Image models train through the same loop and CLI as the audio ones."""

import json

import pytest
import torch
import yaml
from conftest import invoke

from vqaudio.errors import VQAudioError
from vqaudio.recipe import validate_recipe


def image_recipe(kind: str, root: str) -> dict:
    return {
        "name": f"tiny_{kind}",
        "data": {"kind": "cifar10", "root": root, "valid_images": 16},
        "model": {"kind": kind, "image": {"hidden": 8, "residual_blocks": 1, "vae_dim": 4},
                  "quantizer": {"codebook_size": 16, "dim": 4}},
        "train": {"steps": 2, "batch_size": 8, "log_every": 1, "valid_every": 2, "checkpoint_every": 2},
    }


@pytest.mark.parametrize("kind, keys", [
    ("image_vqvae", {"bits_per_dim", "nll_bits_per_dim", "codes_used", "perplexity"}),
    ("image_vae", {"bits_per_dim", "nll_bits_per_dim", "kl_bits_per_dim"}),
])
def test_tiny_image_models_train_on_the_cifar_sample(kind, keys, cifar_like, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    recipe = image_recipe(kind, str(cifar_like))
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    invoke("train", "r.yaml", "--quiet", "--device", "cpu")
    run = next((tmp_path / "runs" / f"tiny_{kind}").iterdir())
    payload = torch.load(run / "checkpoints" / "step_000002.pt", weights_only=True)
    assert payload["kind"] == kind and payload["metadata"]["image_shape"] == [32, 32, 3]
    assert payload["metadata"]["class_names"][3] == "cat" and payload["metadata"]["valid_images"] == 16
    valid = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if '"valid"' in line]
    assert keys <= set(valid[-1])
    assert 0 < valid[-1]["bits_per_dim"] < 9  # an untrained 256-way softmax costs about 8 bits/dim


def test_image_models_and_audio_data_do_not_mix():
    with pytest.raises(VQAudioError, match="model.kind image_vqvae cannot train on data.kind demo"):
        validate_recipe({"name": "x", "model": {"kind": "image_vqvae"}, "train": {"steps": 1, "batch_size": 1}}, "x.yaml")
    with pytest.raises(VQAudioError, match="model.kind audio_vqvae cannot train on data.kind cifar10"):
        validate_recipe({"name": "x", "data": {"kind": "cifar10", "root": "c"}, "train": {"steps": 1, "batch_size": 1}}, "x.yaml")


def test_pixelcnn_prior_trains_on_image_codes_and_samples_a_grid(cifar_like, tmp_path, monkeypatch, capsys):
    from conftest import run_main
    from PIL import Image

    monkeypatch.chdir(tmp_path)
    (tmp_path / "vq.yaml").write_text(yaml.safe_dump(image_recipe("image_vqvae", str(cifar_like))))
    invoke("train", "vq.yaml", "--quiet", "--device", "cpu")
    vq = next((tmp_path / "runs" / "tiny_image_vqvae").iterdir()) / "checkpoints" / "step_000002.pt"
    prior = {
        "name": "tiny_pixelcnn", "model": {"kind": "image_prior"},
        "prior": {"vqvae": "newest", "layers": 2, "stacks": 1, "kernel_size": 3, "residual_channels": 8},
        "train": {"steps": 4, "batch_size": 16, "lr": 0.01, "log_every": 2, "valid_every": 4, "checkpoint_every": 4},
    }
    (tmp_path / "prior.yaml").write_text(yaml.safe_dump(prior))
    invoke("train", "prior.yaml", "--quiet", "--device", "cpu")
    run = next((tmp_path / "runs" / "tiny_pixelcnn").iterdir())
    payload = torch.load(run / "checkpoints" / "step_000004.pt", weights_only=True)
    assert payload["kind"] == "image_prior" and payload["metadata"]["vqvae_checkpoint"] == str(vq.resolve())
    assert payload["metadata"]["code_shape"] == [8, 8] and payload["metadata"]["codebook_size"] == 16
    valid = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if '"valid"' in line]
    assert 0 < valid[-1]["bits_per_code"] < 6  # K = 16: about 4 bits untrained
    assert (vq.parent.parent / "codes").is_dir()  # code maps cached beside the VQ-VAE run
    invoke("sample", "--label", "cat", "-n", "6", "-o", "grid.png", "--seed", "1")
    with Image.open(tmp_path / "grid.png") as image:
        assert image.size == (3 * 34 + 2, 2 * 34 + 2)  # 6 tiles of 32 px in 3 columns, 2 px apart
    invoke("sample", "--label", "3", "-n", "6", "-o", "again.png", "--seed", "1")
    assert (tmp_path / "grid.png").read_bytes() == (tmp_path / "again.png").read_bytes()  # 'cat' is class 3
    code, output = run_main(capsys, "sample", "--label", "zebra", "-o", "z.png")
    assert code == 2 and "--label 'zebra': not a class of this model" in output
    # without -c or --label: the newest prior of any kind (here the only one, an image prior); -c a run folder
    invoke("sample", "-n", "6", "-o", "plain.png", "--seed", "1")
    invoke("sample", "-c", str(run), "--label", "0", "-n", "6", "-o", "first_class.png", "--seed", "1")
    with Image.open(tmp_path / "plain.png") as image:
        assert image.size == (3 * 34 + 2, 2 * 34 + 2)
    assert (tmp_path / "plain.png").read_bytes() == (tmp_path / "first_class.png").read_bytes()  # class 0 by default


def test_eval_reports_bits_per_dim_for_vqvae_prior_and_vae(cifar_like, tmp_path, monkeypatch, capsys):
    from conftest import run_main
    from PIL import Image

    monkeypatch.chdir(tmp_path)
    root = str(cifar_like)
    for kind in ("image_vqvae", "image_vae"):
        (tmp_path / f"{kind}.yaml").write_text(yaml.safe_dump(image_recipe(kind, root)))
        invoke("train", f"{kind}.yaml", "--quiet", "--device", "cpu")
    vq = next((tmp_path / "runs" / "tiny_image_vqvae").iterdir()) / "checkpoints" / "step_000002.pt"
    vae = next((tmp_path / "runs" / "tiny_image_vae").iterdir()) / "checkpoints" / "step_000002.pt"
    invoke("eval", "-c", str(vq), "--max-clips", "40", "--json", "vq.json")
    report = json.loads((tmp_path / "vq.json").read_text())
    assert report["images"] == 40 and report["kind"] == "image_vqvae"
    # Uniform prior: the NLL plus 64 latents x log2 16 bits, spread over 3072 dimensions.
    assert report["bits_per_dim_uniform_prior"] == pytest.approx(report["nll_bits_per_dim"] + 64 * 4 / 3072)
    with Image.open(vq.parent.parent / "eval_reconstructions.png") as png:
        assert png.size == (8 * 34 + 2, 2 * 34 + 2)  # 8 originals above 8 reconstructions
    code, output = run_main(capsys, "eval", "-c", str(vq), "--n-q", "2")
    assert code == 2 and "--n-q: audio options; an image model is scored on its own held-out images" in output
    invoke("eval", "-c", str(vae), "--max-clips", "40", "--json", "vae.json")
    report = json.loads((tmp_path / "vae.json").read_text())
    assert report["bits_per_dim_elbo"] == pytest.approx(report["nll_bits_per_dim"] + report["kl_bits_per_dim"])
    prior = {
        "name": "p", "model": {"kind": "image_prior"},
        "prior": {"vqvae": str(vq), "layers": 2, "stacks": 1, "kernel_size": 3, "residual_channels": 8},
        "train": {"steps": 2, "batch_size": 16, "log_every": 1, "valid_every": 2, "checkpoint_every": 2},
    }
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(prior))
    invoke("train", "p.yaml", "--quiet", "--device", "cpu")
    prior_ckpt = next((tmp_path / "runs" / "p").iterdir()) / "checkpoints" / "step_000002.pt"
    invoke("eval", "-c", str(prior_ckpt), "--max-clips", "40", "--json", "prior.json")
    report = json.loads((tmp_path / "prior.json").read_text())
    learned = report["nll_bits_per_dim"] + report["prior_bits_per_code"] * 64 / 3072
    assert report["bits_per_dim_learned_prior"] == pytest.approx(learned)
