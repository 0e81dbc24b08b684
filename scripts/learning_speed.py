#!/usr/bin/env python
"""Learning speed: what each decoder learns in the same wall-clock budget on this machine.

For every system, the number of steps that fills the budget is measured first (a short timed
run of each training phase), then the system trains for that many steps, is evaluated on its
recipe's held-out clips (every metric; the Opus and Codec2 baselines once, in the first
system's run, on the same clips), and its spectrogram is drawn with `vqaudio plot`.

Systems (`--systems`, default all), on the demo or vctk_mini recipes:
- wavenet:          the WaveNet decoder as the recipe has it (recipes/demo.yaml, vctk_mini.yaml)
- wavenet_pre:      the same with model.decoder.pre_emphasis=0.85
- wavenet_mol:      the same with model.decoder.output=mol (mixture of logistics, 16-bit)
- conv_spectral:    the conv decoder on spectral losses only (recipes/*_conv.yaml, no discriminators)
- conv_adversarial: the conv decoder with discriminators from two thirds of the steps on

`--set KEY=VALUE` overrides every system's recipe (for example another bitrate:
`--set model.quantizer.codebook_size=1024` for 2500 bit/s).

Writes OUT/<system>/ (run folder, eval JSON, spectrogram) and OUT/table.md; the last line is
JSON: {"recipe", "budget_minutes", "systems": {name: {"steps", "train_seconds", metrics...}}}.

    .venv/bin/python scripts/learning_speed.py --recipe demo --budget-minutes 10 --out runs/learning_speed/demo

A long table (vctk_mini: five systems of an hour) can be stopped and run again with `--resume`:
finished systems are kept, and one stopped mid-way continues from its last checkpoint; its train
time is the time up to that checkpoint plus the continuation.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SYSTEMS = {
    "wavenet": ("{recipe}.yaml", []),
    "wavenet_pre": ("{recipe}.yaml", ["model.decoder.pre_emphasis=0.85"]),
    "wavenet_mol": ("{recipe}.yaml", ["model.decoder.output=mol"]),
    "conv_spectral": ("{recipe}_conv.yaml", ["train.adversarial_start=null"]),
    "conv_adversarial": ("{recipe}_conv.yaml", []),
}
ADVERSARIAL_FROM = 2 / 3  # of the steps, for conv_adversarial
SHOWN = ["pesq_wb", "stoi", "log_mel_distance", "visqol", "warpq", "dnsmos_ovrl", "speaker_sim"]


def vqaudio(*args: str) -> float:
    """Run a vqaudio command; returns its wall time in seconds."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "vqaudio", *args], check=True, cwd=ROOT)
    return time.perf_counter() - start


def seconds_per_step(recipe: Path, overrides: list[str], folder: Path, steps: int = 40) -> float:
    """Time per step from a short run's log (the first log interval, which includes start-up, left out)."""
    shutil.rmtree(folder, ignore_errors=True)
    vqaudio("train", str(recipe), *overrides, f"train.steps={steps}", "train.log_every=10", f"train.valid_every={steps * 10}",
            f"train.checkpoint_every={steps * 10}", f"train.runs_dir={folder}", "--quiet")  # fmt: skip
    (metrics,) = folder.glob("*/*/metrics.jsonl")
    times = [(r["step"], r["time"]) for r in map(json.loads, metrics.read_text().splitlines()) if r["split"] == "train"]
    (s0, t0), (s1, t1) = times[0], times[-1]
    shutil.rmtree(folder, ignore_errors=True)
    return (t1 - t0) / (s1 - s0)


def plan(system: str, recipe: Path, overrides: list[str], budget: float, scratch: Path) -> list[str]:
    """The overrides that make `system` fill `budget` seconds (start-up and validation included, roughly)."""
    usable = budget * 0.93  # data preparation, validation and checkpoints take the rest
    if system == "conv_adversarial":
        spectral = seconds_per_step(recipe, [*overrides, "train.adversarial_start=null"], scratch)
        adversarial = seconds_per_step(recipe, [*overrides, "train.adversarial_start=0"], scratch)
        steps = int(usable / (ADVERSARIAL_FROM * spectral + (1 - ADVERSARIAL_FROM) * adversarial))
        return [f"train.steps={steps}", f"train.adversarial_start={int(steps * ADVERSARIAL_FROM)}"]
    steps = int(usable / seconds_per_step(recipe, overrides, scratch))
    return [f"train.steps={steps}"]


def run_folders(runs: Path) -> list[Path]:
    return [p for p in runs.glob("*/*") if p.is_dir() and not p.is_symlink() and p.parent.name != "latest"]


def last_checkpoint(runs: Path) -> Path | None:
    """The newest checkpoint of the one run under `runs`, if a run was started there."""
    checkpoints = sorted(c for run in run_folders(runs) for c in (run / "checkpoints").glob("step_*.pt"))
    return checkpoints[-1] if checkpoints else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recipe", choices=["demo", "vctk_mini"], default="demo")
    parser.add_argument("--budget-minutes", type=float, default=10.0)
    parser.add_argument("--systems", default=",".join(SYSTEMS))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--resume", action="store_true",
                        help="keep the systems an earlier invocation trained; continue one it left mid-way from its last checkpoint")
    args = parser.parse_args()
    out = (args.out or ROOT / "runs" / "learning_speed" / args.recipe).resolve()
    out.mkdir(parents=True, exist_ok=True)
    summary: dict[str, dict] = {}
    baselines: dict[str, dict] = {}
    for index, system in enumerate(args.systems.split(",")):
        template, extra = SYSTEMS[system]
        recipe = ROOT / "recipes" / template.format(recipe=args.recipe)
        overrides = [*extra, *args.set]
        runs = out / system / "runs"
        done = out / system / "train.json"
        started = out / system / "plan.json"
        if args.resume and done.exists():  # trained by an earlier invocation: keep it
            trained = json.loads(done.read_text())
            steps, train_seconds = trained["overrides"], trained["train_seconds"]
        elif args.resume and started.exists() and (checkpoint := last_checkpoint(runs)):
            # killed mid-way: the time up to its last checkpoint counts, then the run continues from there
            planned = json.loads(started.read_text())
            steps = planned["overrides"]
            before = checkpoint.stat().st_mtime - planned["started"]
            train_seconds = before + vqaudio("train", "--resume", str(checkpoint.parents[1]), "--quiet")
            done.write_text(json.dumps({"overrides": steps, "train_seconds": train_seconds}))
        else:
            steps = plan(system, recipe, overrides, args.budget_minutes * 60, out / "scratch")
            shutil.rmtree(runs, ignore_errors=True)
            started.parent.mkdir(parents=True, exist_ok=True)
            started.write_text(json.dumps({"overrides": steps, "started": time.time()}))
            train_seconds = vqaudio("train", str(recipe), *overrides, *steps, f"train.runs_dir={runs}", "--quiet")
            done.write_text(json.dumps({"overrides": steps, "train_seconds": train_seconds}))
        (run,) = run_folders(runs)
        report = out / system / "eval.json"
        vqaudio("eval", "-c", str(run), "--json", str(report), "--force", *(["--no-baselines"] if index else []))
        vqaudio("plot", str(run))
        spectrogram = next((run / "plots").glob("spectrogram_*.png"))
        shutil.copy(spectrogram, out / f"spectrogram_{system}.png")
        systems = json.loads(report.read_text())["systems"]
        model = systems[0]
        summary[system] = {"steps": int(steps[0].split("=")[1]), "train_seconds": round(train_seconds, 1), "bitrate": model["bitrate"],
                           **{m: (model["summary"][m] or {}).get("mean") for m in SHOWN}}  # fmt: skip
        if not index:
            baselines = {s["name"]: {"bitrate": s["bitrate"], **{m: (s["summary"][m] or {}).get("mean") for m in SHOWN}} for s in systems[1:]}
        print(f"{system}: {summary[system]}", flush=True)
    rows = ["| system | bit/s | steps | train time | " + " | ".join(SHOWN) + " |", "|---" * (4 + len(SHOWN)) + "|"]

    def cell(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}"

    for name, row in summary.items():
        rows.append(f"| {name} | {row['bitrate']:.0f} | {row['steps']} | {row['train_seconds'] / 60:.1f} min | " + " | ".join(cell(row[m]) for m in SHOWN) + " |")
    for name, row in baselines.items():
        rate = f"{row['bitrate']:.0f}" if row["bitrate"] else "-"
        rows.append(f"| {name} | {rate} | | | " + " | ".join(cell(row[m]) for m in SHOWN) + " |")
    (out / "table.md").write_text("\n".join(rows) + "\n")
    print("\n".join(rows))
    print(json.dumps({"recipe": args.recipe, "budget_minutes": args.budget_minutes, "systems": summary, "baselines": baselines}))


if __name__ == "__main__":
    main()
