"""Time PixelCNN sampling: the cached sampler against a full forward pass per position.

    python scripts/bench_pixelcnn_sampling.py [--batch 4] [--threads 2]

Untrained networks of the sizes the recipes use (sampling cost does not depend on the weights):
the CPU and paper-sized VQ-VAE-2 top priors (4x4, attention) and bottom priors (8x8, conditioned
on the top), and larger maps. The full-pass sampler is timed only where it finishes in reasonable
time. Prints a table; the last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from vqaudio.generation.pixelcnn import sample_image_codes_full, sample_pixelcnn
from vqaudio.models.pixelcnn import GatedPixelCNN

CASES = [
    # name, side, layers, channels, options
    ("top prior, CPU recipe", 4, 8, 64, {"attention_every": 4, "heads": 4}),
    ("bottom prior, CPU recipe", 8, 8, 64, {"condition_codes": 256, "condition_blocks": 3, "condition_scale": 2}),
    ("top prior, paper-sized recipe", 4, 20, 128, {"attention_every": 5, "heads": 4}),
    ("bottom prior, paper-sized recipe", 8, 20, 128, {"condition_codes": 512, "condition_blocks": 10, "condition_scale": 2}),
    ("16x16 map, 20 layers", 16, 20, 128, {}),
    ("32x32 map, 20 layers", 32, 20, 128, {}),
]


def timed(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--full-up-to", type=int, default=16, help="time the full-pass sampler up to this side")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rows = []
    for name, side, layers, channels, options in CASES:
        net = GatedPixelCNN(options.get("condition_codes", 512), channels, layers, 5, 10, **options).eval()
        labels = torch.zeros(args.batch, dtype=torch.long)
        top = None
        if options.get("condition_codes"):
            top = torch.randint(0, options["condition_codes"], (args.batch, side // 2, side // 2))
        cached = timed(lambda: sample_pixelcnn(net, labels, side, side, top))
        full = timed(lambda: sample_image_codes_full(net, labels, side, side, condition=top)) if side <= args.full_up_to else None
        rows.append({"case": name, "side": side, "layers": layers, "channels": channels,
                     "cached_s_per_map": cached / args.batch, "full_s_per_map": full / args.batch if full else None})  # fmt: skip
        speed = f"{full / cached:5.1f}x" if full else "   - "
        print(f"{name:34s} {side:2d}x{side:<2d} cached {cached / args.batch:7.3f} s/map   "
              f"full {full / args.batch if full else float('nan'):7.3f} s/map   {speed}")  # fmt: skip
    print(json.dumps({"batch": args.batch, "threads": args.threads, "results": rows}))


if __name__ == "__main__":
    main()
