#!/usr/bin/env python
"""Codebook usage on held-out real speech after a fixed training budget, for three quantisers.

Trains the demo-size model (recipes/demo.yaml) on the real VCTK recordings in
../shared/data/vctk_mini for --steps steps with
  plain          : the paper's EMA codebook from a random N(0, 1) start,
  kmeans         : EMA, k-means initialisation from the first training batches,
  kmeans_restart : EMA, k-means initialisation and dead-code restarts,
then encodes the whole held-out utterances and counts the distinct codes (also printed:
EMA seeded from one batch of encoder outputs, without restarts).

    .venv/bin/python scripts/codebook_usage.py [--steps 300] [--data ../shared/data/vctk_mini]

Last line: {"plain": ..., "kmeans": ..., "kmeans_restart": ...} as fractions of K.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from vqaudio.data.corpus import heldout_split, prepare_corpus
from vqaudio.recipe import load_recipe
from vqaudio.tasks import build_setup
from vqaudio.train.loop import Trainer

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {  # every variant sets both keys: the demo recipe itself enables k-means and restarts
    "plain": ["model.quantizer.init=random", "model.quantizer.restart_threshold=0"],
    "data_seeded": ["model.quantizer.init=data", "model.quantizer.restart_threshold=0"],
    "kmeans": ["model.quantizer.init=kmeans", "model.quantizer.restart_threshold=0"],
    "kmeans_restart": ["model.quantizer.init=kmeans", "model.quantizer.restart_threshold=0.3"],
}


def held_out_usage(recipe, model) -> tuple[int, int]:
    corpus = prepare_corpus(recipe.data)
    _, valid = heldout_split(corpus, recipe.data.valid_per_speaker, recipe.data.valid_max)
    seen = set()
    frames = 0
    model.eval()
    with torch.no_grad():
        for index in valid:
            audio = corpus.audio(index)
            audio = audio[: audio.size - audio.size % model.hop]
            codes = model.encode(torch.from_numpy(audio)[None], n_q=1)[0, 0]
            seen.update(codes.tolist())
            frames += codes.numel()
    return len(seen), frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "vctk_mini"))
    args = parser.parse_args()
    torch.set_num_threads(2)
    result = {}
    for name, overrides in VARIANTS.items():
        with tempfile.TemporaryDirectory() as tmp:
            recipe = load_recipe(
                ROOT / "recipes" / "demo.yaml",
                [
                    "data.kind=vctk", f"data.root={args.data}", "data.valid_per_speaker=2",
                    f"train.steps={args.steps}", f"train.runs_dir={tmp}",
                    f"train.valid_every={args.steps}", f"train.checkpoint_every={args.steps}",
                    *overrides,
                ],
            )  # fmt: skip
            setup = build_setup(recipe)
            run_dir = Path(tmp) / "run"
            (run_dir / "checkpoints").mkdir(parents=True)
            start = time.perf_counter()
            result_train = Trainer(setup, recipe, run_dir, torch.device("cpu"), show_progress=False).run()
            used, frames = held_out_usage(recipe, setup.model)
            k = recipe.model.quantizer.codebook_size
            print(
                f"{name:22s}: {used:4d} of {k} codes on {frames} held-out frames ({used / k:.3f}); "
                f"valid nll {result_train.last_valid['nll']:.3f}, {time.perf_counter() - start:.0f} s"
            )
            if name in ("plain", "kmeans", "kmeans_restart"):
                result[name] = round(used / k, 4)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
