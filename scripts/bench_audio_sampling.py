"""Time speech sampling per second of audio: one-level codes against two-level (VQ-VAE-2) codes.

    python scripts/bench_audio_sampling.py [--seconds 2] [--batch 1] [--threads 2]

Untrained models of the sizes the demo recipes describe (sampling cost does not depend on the
weights): `demo.yaml` with `demo_prior.yaml`, and `demo_vqvae2.yaml` with its top and bottom priors.
Each stage is timed separately: drawing the codes from the prior(s), then WaveNet decoding. Also
checks that the bottom prior's cached sampler draws what its full teacher-forced pass predicts
(greedy codes equal the argmax of the full pass). Prints a table; the last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from vqaudio.generation.code_prior import sample_codes
from vqaudio.generation.decode import decode
from vqaudio.models.build import build_audio_vqvae, build_code_prior
from vqaudio.recipe import load_recipe

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
SPEAKERS = 4


def timed(function):
    start = time.perf_counter()
    result = function()
    return result, time.perf_counter() - start


def warm_up(speakers: torch.Tensor) -> None:
    """Compile the fused CPU kernels (numba) once, outside the timed runs."""
    model = build_audio_vqvae(load_recipe(RECIPES / "demo.yaml").model, SPEAKERS).eval()
    prior_recipe = load_recipe(RECIPES / "demo_prior.yaml").prior
    assert prior_recipe is not None
    sample_codes(build_code_prior(prior_recipe, 8, 1, SPEAKERS).eval(), 8, speakers)
    with torch.inference_mode():
        decode(model, torch.zeros(speakers.shape[0], 1, 4, dtype=torch.long), speakers)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    speakers = torch.zeros(args.batch, dtype=torch.long)
    warm_up(speakers)
    audio_seconds = args.seconds * args.batch
    figures: dict[str, float | bool] = {}

    one = build_audio_vqvae(load_recipe(RECIPES / "demo.yaml").model, SPEAKERS).eval()
    prior_recipe = load_recipe(RECIPES / "demo_prior.yaml")
    assert prior_recipe.prior is not None
    prior = build_code_prior(prior_recipe.prior, one.codebook_size, 1, SPEAKERS).eval()
    frames = int(args.seconds * 16000) // one.hop
    codes, t_prior = timed(lambda: sample_codes(prior, frames, speakers))
    with torch.inference_mode():
        _, t_decode = timed(lambda: decode(one, codes, speakers))
    figures.update(one_level_prior_s=t_prior / audio_seconds, one_level_decode_s=t_decode / audio_seconds)

    two = build_audio_vqvae(load_recipe(RECIPES / "demo_vqvae2.yaml").model, SPEAKERS).eval()
    top_recipe = load_recipe(RECIPES / "demo_vqvae2_top_prior.yaml").prior
    bottom_recipe = load_recipe(RECIPES / "demo_vqvae2_bottom_prior.yaml").prior
    assert top_recipe is not None and bottom_recipe is not None and two.top_codebook_size is not None
    top_prior = build_code_prior(top_recipe, two.top_codebook_size, 1, SPEAKERS).eval()
    bottom_prior = build_code_prior(bottom_recipe, two.codebook_size, 1, SPEAKERS, two.top_codebook_size, two.ratio).eval()
    frames = int(args.seconds * 16000) // (two.hop * two.ratio) * two.ratio
    top, t_top = timed(lambda: sample_codes(top_prior, frames // two.ratio, speakers))
    bottom, t_bottom = timed(lambda: sample_codes(bottom_prior, frames, speakers, top=top))
    with torch.inference_mode():
        _, t_decode2 = timed(lambda: decode(two, bottom, speakers, top=top))
        greedy = sample_codes(bottom_prior, frames, speakers, temperature=0, top=top)
        full = bottom_prior.log_probs(greedy, speakers, top).argmax(-1)
    figures.update(
        two_level_top_prior_s=t_top / audio_seconds,
        two_level_bottom_prior_s=t_bottom / audio_seconds,
        two_level_decode_s=t_decode2 / audio_seconds,
        cached_equals_full=bool(torch.equal(full, greedy[:, 0])),
    )
    one_total = figures["one_level_prior_s"] + figures["one_level_decode_s"]
    two_total = figures["two_level_top_prior_s"] + figures["two_level_bottom_prior_s"] + figures["two_level_decode_s"]
    figures.update(one_level_total_s=one_total, two_level_total_s=two_total)
    print(f"{args.seconds:g} s x batch {args.batch} on {args.threads} thread(s); seconds of compute per second of audio:")
    print(f"  one level : prior {figures['one_level_prior_s']:.3f} + decode {figures['one_level_decode_s']:.3f} = {one_total:.3f}")
    print(
        f"  two levels: top prior {figures['two_level_top_prior_s']:.3f} + bottom prior {figures['two_level_bottom_prior_s']:.3f}"
        f" + decode {figures['two_level_decode_s']:.3f} = {two_total:.3f}"
    )
    print(f"  bottom prior, cached greedy codes equal the full pass's argmax: {figures['cached_equals_full']}")
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in figures.items()}))


if __name__ == "__main__":
    main()
