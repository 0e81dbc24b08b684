"""VQ-VAE-2 on images: two code levels, the bottom conditioned on the top, a prior for each level,
sampling top then bottom, and bits/dim under the hierarchy."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from conftest import invoke, run_main

from vqaudio.models.image_vqvae2 import ImageVQVAE2
from vqaudio.recipe import validate_recipe


def images(count: int = 4, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (count, 32, 32, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def tiny_model() -> ImageVQVAE2:
    torch.manual_seed(0)
    return ImageVQVAE2(codebook_size=16, dim=4, hidden=8, residual_blocks=1)


def test_code_maps_are_at_one_eighth_and_one_quarter_of_the_side():
    model = tiny_model()
    top, bottom = model.encode(images())
    assert top.shape == (4, 4, 4) and bottom.shape == (4, 8, 8)
    assert model.decode(top, bottom).shape == (4, 32, 32, 3)
    loss, metrics = model.training_step({"images": images()})
    assert loss.dim() == 0 and {"bits_per_dim", "nll_bits_per_dim", "commitment"} <= set(metrics)
    summary = model.summarize_metrics({k: v for k, v in metrics.items()})
    assert {"codes_used", "top_codes_used", "top_perplexity"} <= set(summary)


def test_gradients_reach_both_encoders_through_both_levels():
    model = tiny_model()
    loss, _ = model.training_step({"images": images()})
    loss.backward()
    for name in ("encode_bottom.0.weight", "encode_top.0.weight", "top_to_bottom.0.weight", "bottom_latents.weight",
                 "upsample_top.weight"):  # fmt: skip
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_the_bottom_codes_are_conditioned_on_the_top_and_the_decoder_uses_both():
    model = tiny_model().eval()
    batch = images()
    top, bottom = model.encode(batch)
    # The bottom latents see the quantised top: replace the top quantiser's codebook and they move.
    features = model.encode_bottom(torch.zeros(4, 3, 32, 32))
    a = model.bottom_latents(torch.cat([features, model.top_to_bottom(model.quantize_top.lookup(top))], 1))
    b = model.bottom_latents(torch.cat([features, model.top_to_bottom(model.quantize_top.lookup((top + 1) % 16))], 1))
    assert not torch.allclose(a, b)
    # The decoder reads both levels.
    base = model.image_nll(batch, top, bottom)
    assert (base - model.image_nll(batch, (top + 1) % 16, bottom)).abs().max() > 1e-3
    assert (base - model.image_nll(batch, top, (bottom + 1) % 16)).abs().max() > 1e-3


def test_image_sides_must_divide_by_eight(tmp_path):
    from PIL import Image

    from vqaudio.errors import VQAudioError
    from vqaudio.tasks.image_models import build_image_task

    (tmp_path / "a").mkdir()
    for index in range(12):
        Image.new("RGB", (12, 12), (index * 20, 0, 0)).save(tmp_path / "a" / f"{index}.png")
    recipe = validate_recipe({"name": "x", "data": {"kind": "image_folder", "root": str(tmp_path)},
                              "model": {"kind": "image_vqvae2"}, "train": {"steps": 1, "batch_size": 1}}, "x.yaml")  # fmt: skip
    with pytest.raises(VQAudioError, match="image_vqvae2 needs sides that are multiples of 8"):
        build_image_task(recipe)


def recipe(kind: str, root: str) -> dict:
    return {
        "name": "tiny_v2", "data": {"kind": "cifar10", "root": root, "valid_images": 16},
        "model": {"kind": kind, "image": {"hidden": 8, "residual_blocks": 1}, "quantizer": {"codebook_size": 16, "dim": 4}},
        "train": {"steps": 2, "batch_size": 8, "log_every": 1, "valid_every": 2, "checkpoint_every": 2},
    }  # fmt: skip


def prior(name: str, level: str, **extra) -> dict:
    return {
        "name": name, "model": {"kind": "image_prior"},
        "prior": {"vqvae": "newest", "level": level, "layers": 2, "stacks": 1, "kernel_size": 3, "residual_channels": 8,
                  "heads": 2, **extra},
        "train": {"steps": 3, "batch_size": 16, "lr": 0.01, "log_every": 1, "valid_every": 3, "checkpoint_every": 3},
    }  # fmt: skip


def test_two_priors_train_sample_top_then_bottom_and_score_bits_per_dim(cifar_like, tmp_path, monkeypatch, capsys):
    from PIL import Image

    monkeypatch.chdir(tmp_path)
    root = str(cifar_like)
    (tmp_path / "v2.yaml").write_text(yaml.safe_dump(recipe("image_vqvae2", root)))
    invoke("train", "v2.yaml", "--quiet", "--device", "cpu")
    (tmp_path / "top.yaml").write_text(yaml.safe_dump(prior("top", "top", attention_every=1, dropout=0.1)))
    (tmp_path / "bottom.yaml").write_text(yaml.safe_dump(prior("bottom", "bottom", condition_blocks=1)))
    invoke("train", "top.yaml", "--quiet", "--device", "cpu")
    invoke("train", "bottom.yaml", "--quiet", "--device", "cpu")
    top_ckpt = next((tmp_path / "runs" / "top").glob("*/checkpoints/step_000003.pt"))
    bottom_ckpt = next((tmp_path / "runs" / "bottom").glob("*/checkpoints/step_000003.pt"))
    top_meta = torch.load(top_ckpt, weights_only=True)["metadata"]
    bottom_meta = torch.load(bottom_ckpt, weights_only=True)["metadata"]
    assert top_meta["code_shape"] == [4, 4] and top_meta["level"] == "top" and top_meta["condition_shape"] is None
    assert bottom_meta["code_shape"] == [8, 8] and bottom_meta["condition_shape"] == [4, 4]
    for run in ("top", "bottom"):
        valid = [json.loads(x) for x in next((tmp_path / "runs" / run).glob("*/metrics.jsonl")).read_text().splitlines()
                 if '"valid"' in x]  # fmt: skip
        assert 0 < valid[-1]["bits_per_code"] < 6  # K = 16

    # sample: top, then bottom given the top (the bottom prior found by itself), decoded to a grid
    invoke("sample", "--label", "cat", "-n", "4", "-o", "grid.png", "-c", str(top_ckpt), "--seed", "2")
    with Image.open(tmp_path / "grid.png") as image:
        assert image.size == (2 * 34 + 2, 2 * 34 + 2)  # 4 tiles of 32 px, 2 x 2, 2 px apart
    invoke("sample", "--label", "3", "-n", "4", "-o", "again.png", "-c", str(top_ckpt), "--bottom", str(bottom_ckpt),
           "--seed", "2")  # fmt: skip
    assert (tmp_path / "grid.png").read_bytes() == (tmp_path / "again.png").read_bytes()

    # bits/dim under the hierarchy of priors: pixels given codes + top codes + bottom codes given top
    invoke("eval", "-c", str(top_ckpt), "--json", "e.json")
    report = json.loads((tmp_path / "e.json").read_text())
    assert report["kind"] == "image_vqvae2" and report["latents_per_image"] == 16 + 64
    assert report["bits_per_image_raw"] == 80 * 4
    assert report["bits_per_dim_learned_prior"] == pytest.approx(
        report["nll_bits_per_dim"] + report["prior_bits_per_code"] * 80 / 3072, rel=1e-6
    )
    assert report["bottom_prior_checkpoint"].endswith("step_000003.pt")

    text = " ".join(invoke("info", str(bottom_ckpt)).output.split())
    assert "prior over the bottom level code maps (8x8)" in text and "3 cat" in text

    # the wrong prior in the wrong place is named
    code, text = run_main(capsys, "sample", "--label", "cat", "-c", str(bottom_ckpt), "-o", "x.png")
    assert code == 2 and "a bottom prior; give the top prior (-c) and this one with --bottom" in text
    code, text = run_main(capsys, "sample", "--label", "cat", "-c", str(top_ckpt), "--bottom", str(top_ckpt), "-o", "y.png")
    assert code == 2 and "not a bottom prior" in text
    flat = prior("flat", "top")
    flat["prior"].update(level=None, vqvae=str(next((tmp_path / "runs" / "tiny_v2").iterdir())))
    (tmp_path / "flat.yaml").write_text(yaml.safe_dump(flat))
    code, text = run_main(capsys, "train", "flat.yaml", "--quiet")
    assert code == 2 and "set prior.level to top or bottom" in text
