"""Image models train through the same loop and CLI as the audio ones."""

import json

import pytest
import torch
import yaml

from vqaudio.errors import VQAudioError
from vqaudio.recipe import validate_recipe

from conftest import invoke


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
def test_tiny_image_models_train_on_the_cifar_sample(kind, keys, shared_data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    recipe = image_recipe(kind, str(shared_data / "cifar-10-batches-py-mini"))
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
