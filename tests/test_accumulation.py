"""Gradient accumulation: N micro-batches make one optimiser step, and the EMA codebook learns once
per step from all of them, exactly as one batch N times the size would."""

from __future__ import annotations

import torch
from conftest import tiny_dict

from vqaudio.models.quantizer import VectorQuantizer
from vqaudio.recipe import validate_recipe
from vqaudio.tasks import build_setup
from vqaudio.train.loop import Trainer


def _codebooks_after_training(tmp_path, batch_size: int, accumulate: int) -> dict[str, torch.Tensor]:
    quantizer = {"codebook_size": 32, "dim": 8, "init": "random", "restart_threshold": 0.3}
    data = tiny_dict(train={"steps": 2, "batch_size": batch_size, "accumulate_batches": accumulate, "valid_every": 100})
    data["model"]["quantizer"] = quantizer
    recipe = validate_recipe(data, "t")
    setup = build_setup(recipe)
    trainer = Trainer(setup, recipe, tmp_path, torch.device("cpu"), show_progress=False)
    for _ in range(2):
        trainer._train_step()
    return {k: v.clone() for k, v in trainer.model.quantizer.state_dict().items()}


def test_accumulated_micro_batches_update_the_codebook_as_one_batch(tmp_path):
    one = _codebooks_after_training(tmp_path / "one", batch_size=4, accumulate=1)
    two = _codebooks_after_training(tmp_path / "two", batch_size=2, accumulate=2)
    assert int(two["levels.0.ema_steps"]) == int(one["levels.0.ema_steps"]) == 2  # once per optimiser step
    for key in ("levels.0.ema_count", "levels.0.ema_sum", "levels.0.usage", "levels.0.codebook"):
        torch.testing.assert_close(two[key], one[key], atol=1e-5, rtol=1e-4)


def test_deferred_statistics_equal_one_batch_of_all_of_them():
    torch.manual_seed(0)
    first, second = torch.randn(3, 4, 10), torch.randn(5, 4, 10)
    whole = VectorQuantizer(16, 4, init="random").train()
    parts = VectorQuantizer(16, 4, init="random").train()
    parts.load_state_dict(whole.state_dict())
    whole(torch.cat([first, second]))
    parts.defer_statistics = True
    parts(first)
    parts(second)
    assert torch.equal(parts.ema_count, whole.state_dict()["ema_count"]) is False  # nothing learnt yet
    parts.defer_statistics = False
    parts.flush_statistics()
    for key, value in whole.state_dict().items():
        torch.testing.assert_close(parts.state_dict()[key], value, atol=1e-6, rtol=1e-5)
