"""Train the same recipe as a 2-process torchrun job (gloo, CPU) and as one process with the doubled
batch, then compare the weights.

    python scripts/ddp_equivalence.py [--recipe recipes/demo.yaml] [--steps 50] [--batch-size 4]

`--batch-size` is per process: the one-process run uses twice as much. Prints the largest absolute
and relative weight differences, whether the two ranks' fingerprints agree, and the wall times;
the last line is JSON. For scale it also prints the difference rounding alone makes: the same
one-process run with 1 thread instead of 2. Code assignment is an argmin, so once rounding flips
one near-tie the runs follow different (equally good) paths; compare the held-out losses then.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from vqaudio.formats.checkpoint import list_checkpoints, load_checkpoint


def run(command: list[str], threads: int | None = None) -> float:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        sys.exit(f"failed: {' '.join(command)}\n{done.stderr[-2000:]}")
    return time.perf_counter() - start


def final_checkpoint(runs: Path) -> dict:
    (run,) = [p.parent for p in runs.glob("*/*/checkpoints")]
    return load_checkpoint(list_checkpoints(run)[-1])


def difference(a: dict, b: dict) -> tuple[float, float, str]:
    """Largest absolute weight difference (and its tensor), and the largest relative to a tensor's scale."""
    worst_abs, worst_rel, worst_key = 0.0, 0.0, ""
    for key, x in a["model"].items():
        if not x.is_floating_point():
            continue
        y = b["model"][key].double()
        diff = (x.double() - y).abs().max().item()
        if diff > worst_abs:
            worst_abs, worst_key = diff, key
        worst_rel = max(worst_rel, diff / (y.abs().max().item() or 1.0))
    return worst_abs, worst_rel, worst_key


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="recipes/demo.yaml")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=4, help="per process")
    args = parser.parse_args()
    common = [args.recipe, f"train.steps={args.steps}", f"train.checkpoint_every={args.steps}",
              f"train.valid_every={args.steps}", "--quiet", "--device", "cpu"]  # fmt: skip
    single = [sys.executable, "-m", "vqaudio", "train", *common, f"train.batch_size={2 * args.batch_size}"]
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        seconds = {
            "two_processes": run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                                  "-m", "vqaudio", "train", *common, f"train.batch_size={args.batch_size}",
                                  f"train.runs_dir={folder / 'two'}"]),  # fmt: skip
            "one_process": run([*single, f"train.runs_dir={folder / 'one'}"], threads=2),
            "one_process_one_thread": run([*single, f"train.runs_dir={folder / 'thread'}"], threads=1),
        }
        two, one, thread = (final_checkpoint(folder / name) for name in ("two", "one", "thread"))
    ddp_abs, ddp_rel, ddp_key = difference(two, one)
    ref_abs, ref_rel, ref_key = difference(thread, one)
    ranks_agree = len(set(two["rank_fingerprints"])) == 1
    print(f"{args.recipe}, {args.steps} steps: 2 processes x batch {args.batch_size} vs 1 process x batch {2 * args.batch_size}")
    print(f"  largest weight difference {ddp_abs:.3g} ({ddp_key}); relative to the tensor's scale {ddp_rel:.3g}")
    print("reference, rounding alone: the 1-process run with 1 thread instead of 2")
    print(f"  largest weight difference {ref_abs:.3g} ({ref_key}); relative to the tensor's scale {ref_rel:.3g}")
    losses = {name: ckpt["valid"].get("loss") for name, ckpt in (("two", two), ("one", one), ("thread", thread))}
    print(f"held-out loss: 2 processes {losses['two']:.5f}, 1 process {losses['one']:.5f}, 1 thread {losses['thread']:.5f}")
    print(f"rank fingerprints {two['rank_fingerprints']} ({'identical' if ranks_agree else 'DIFFERENT'})")
    print("wall time (start-up included): " + ", ".join(f"{k} {v:.1f} s" for k, v in seconds.items()))
    print(json.dumps({
        "recipe": args.recipe, "steps": args.steps, "batch_per_process": args.batch_size,
        "max_abs_weight_diff": ddp_abs, "max_rel_weight_diff": ddp_rel,
        "reference_threads_max_abs_diff": ref_abs, "reference_threads_max_rel_diff": ref_rel,
        "valid_loss_two": losses["two"], "valid_loss_one": losses["one"], "ranks_identical": ranks_agree,
        "seconds": {k: round(v, 1) for k, v in seconds.items()}, "torch": torch.__version__,
    }))  # fmt: skip


if __name__ == "__main__":
    main()
