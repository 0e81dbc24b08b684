"""The `vqaudio` command line. Thin: it parses arguments and calls library functions."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from vqaudio.errors import TrainingInterrupted, VQAudioError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Neural audio codec experiments with the VQ-VAE: train, encode, decode, inspect.",
)
out = Console()
err = Console(stderr=True)

DeviceOpt = Annotated[str, typer.Option("--device", help="auto (CUDA when present), cpu, cuda or cuda:N")]
CheckpointOpt = Annotated[
    Optional[Path], typer.Option("-c", "--checkpoint", help="model checkpoint; default: the newest under ./runs")
]
ForceOpt = Annotated[bool, typer.Option("--force", help="overwrite an existing output file")]


def _checkpoint_or_newest(checkpoint: Path | None, kind: str = "audio_vqvae") -> Path:
    from vqaudio.train.run_dir import newest_checkpoint

    if checkpoint is not None:
        return checkpoint
    found = newest_checkpoint(Path("runs"), kind)
    err.print(f"using checkpoint {found}")
    return found


@app.command()
def train(
    recipe: Annotated[Optional[str], typer.Argument(help="recipe YAML (omit with --resume)")] = None,
    overrides: Annotated[Optional[list[str]], typer.Argument(help="KEY=VALUE overrides, e.g. train.steps=100")] = None,
    resume: Annotated[Optional[Path], typer.Option("--resume", help="continue the run in this folder")] = None,
    device: DeviceOpt = "auto",
    quiet: Annotated[bool, typer.Option("--quiet", help="no progress bar")] = False,
) -> None:
    """Train the model a recipe describes; Ctrl-C saves a checkpoint you can --resume."""
    from vqaudio.device import resolve_device
    from vqaudio.recipe import load_recipe
    from vqaudio.train.run import resume_recipe
    from vqaudio.train.run import train as run_training

    extra = list(overrides or [])
    if recipe is not None and "=" in recipe and not recipe.endswith((".yaml", ".yml")):
        extra.insert(0, recipe)  # `vqaudio train --resume RUN train.steps=2000`
        recipe = None
    if resume is not None:
        parsed = resume_recipe(resume, extra)
    elif recipe is None:
        raise VQAudioError("give a recipe (vqaudio train recipes/demo.yaml) or --resume RUN_DIR")
    else:
        parsed = load_recipe(recipe, extra)
    result = run_training(parsed, resolve_device(device), resume, show_progress=not quiet, console=err)
    summary = "  ".join(f"{k} {v:.4g}" for k, v in result.last_valid.items())
    out.print(f"finished step {result.step}: {result.checkpoint}")
    if summary:
        out.print(f"validation: {summary}")


@app.command()
def encode(
    source: Annotated[Path, typer.Argument(help="audio file (anything soundfile reads)")],
    target: Annotated[Path, typer.Argument(help="codes file to write (.npy, with a .npy.json sidecar)")],
    checkpoint: CheckpointOpt = None,
    speaker: Annotated[Optional[str], typer.Option("--speaker", help="record this speaker (index or name)")] = None,
    n_q: Annotated[
        Optional[int], typer.Option("--n-q", help="residual VQ: keep the first N codebooks (the bitrate); default all")
    ] = None,
    force: ForceOpt = False,
    device: DeviceOpt = "auto",
) -> None:
    """Turn a recording into VQ-VAE codes."""
    from vqaudio.audio.io import expected_samples
    from vqaudio.codec import encode_file, load_codec
    from vqaudio.device import resolve_device
    from vqaudio.progress import progress_bar

    codec = load_codec(_checkpoint_or_newest(checkpoint), resolve_device(device))
    with progress_bar("encode", expected_samples(source, codec.sample_rate), "samples") as update:
        side = encode_file(codec, source, target, speaker=speaker, force=force, on_progress=update, n_q=n_q)
    seconds = side["num_samples"] / codec.sample_rate
    books = f" x {side['n_q']} codebooks" if side["n_q"] > 1 else ""
    out.print(
        f"wrote {target} ({side['shape'][-1]} frames{books} for {seconds:.2f} s at {side['bitrate']:.0f} bit/s, "
        f"speaker {side['speaker'] or 'not recorded'})"
    )


@app.command()
def decode(
    source: Annotated[Path, typer.Argument(help="codes file written by vqaudio encode")],
    target: Annotated[Path, typer.Argument(help="wav file to write")],
    checkpoint: CheckpointOpt = None,
    speaker: Annotated[Optional[str], typer.Option("--speaker", help="index or name; default: the sidecar's")] = None,
    temperature: Annotated[float, typer.Option("--temperature", help="sampling temperature; 0 = most likely")] = 1.0,
    seed: Annotated[int, typer.Option("--seed", help="random seed for sampling")] = 0,
    backend: Annotated[
        str, typer.Option("--backend", help="auto, fast (fused CPU kernel), plain (PyTorch) or cuda-graph")
    ] = "auto",
    force: ForceOpt = False,
    device: DeviceOpt = "auto",
) -> None:
    """Turn codes back into audio with the WaveNet decoder (another --speaker converts the voice)."""
    from vqaudio.codec import decode_file, load_codec, open_codes
    from vqaudio.device import resolve_device
    from vqaudio.progress import progress_bar

    if backend not in ("auto", "fast", "plain", "cuda-graph"):
        raise VQAudioError(f"--backend {backend!r}: choose auto, fast, plain or cuda-graph")
    codec = load_codec(_checkpoint_or_newest(checkpoint), resolve_device(device))
    request = open_codes(codec, source, target, speaker, force)
    with progress_bar("decode", request.num_samples, "samples") as update:
        info = decode_file(codec, request, target, force, temperature, seed, on_progress=update, backend=backend)
    out.print(f"wrote {target} ({info['num_samples'] / info['sample_rate']:.2f} s at {info['sample_rate']} Hz, speaker {info['speaker']})")


@app.command()
def info(checkpoint: Annotated[Path, typer.Argument(help="checkpoint file")]) -> None:
    """Describe a checkpoint: recipe, step, speakers, hop, K and bitrate."""
    from vqaudio.info import describe_checkpoint

    describe_checkpoint(checkpoint, out)


@app.command("demo-clip")
def demo_clip(
    target: Annotated[Path, typer.Argument(help="wav file to write")],
    speaker: Annotated[int, typer.Option("--speaker", help="demo speaker index")] = 0,
    seconds: Annotated[float, typer.Option("--seconds")] = 3.0,
    seed: Annotated[int, typer.Option("--seed", help="which utterance; never one the demo recipe trains on")] = 0,
    sample_rate: Annotated[int, typer.Option("--sample-rate")] = 16000,
    force: ForceOpt = False,
) -> None:
    """Write a new utterance of a synthetic demo speaker (not in the demo training set)."""
    from vqaudio.audio.io import write_wav
    from vqaudio.data.demo import HELDOUT_UTTERANCE_BASE, synthesize_utterance

    if seconds <= 0.2:
        raise VQAudioError(f"--seconds {seconds}: must be more than 0.2")
    audio = synthesize_utterance(speaker, HELDOUT_UTTERANCE_BASE + seed, seconds, sample_rate)
    write_wav(target, audio, sample_rate, force=force)
    out.print(f"wrote {target} (demo speaker {speaker}, {seconds:.2f} s at {sample_rate} Hz)")


def main() -> None:
    try:
        app()
    except VQAudioError as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except TrainingInterrupted as exc:
        err.print(f"[yellow]interrupted:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(130)
