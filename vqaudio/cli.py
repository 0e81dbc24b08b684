"""The `vqaudio` command line. Thin: it parses arguments and calls library functions."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape

from vqaudio.errors import TrainingInterrupted, VQAudioError
from vqaudio.progress import preparation_bar

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


def _check_backend(backend: str) -> None:
    if backend not in ("auto", "fast", "plain", "cuda-graph"):
        raise VQAudioError(f"--backend {backend!r}: choose auto, fast, plain or cuda-graph")


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


BottomOpt = Annotated[
    Optional[Path],
    typer.Option("--bottom", help="two-level models: the bottom prior (-c is the top one); default: the newest over the same model"),
]
PriorOpt = Annotated[
    Optional[Path], typer.Option("--prior", help="prior checkpoint for .vqa files; default: the newest prior under ./runs")
]


@app.command()
def encode(
    source: Annotated[Path, typer.Argument(help="audio file (anything soundfile reads)")],
    target: Annotated[Path, typer.Argument(help="codes file to write (.npy + .npy.json sidecar; .npz for a two-level model; .vqa with --entropy)")],
    checkpoint: CheckpointOpt = None,
    speaker: Annotated[Optional[str], typer.Option("--speaker", help="record this speaker (index or name)")] = None,
    n_q: Annotated[
        Optional[int], typer.Option("--n-q", help="residual VQ: keep the first N codebooks (the bitrate); default all")
    ] = None,
    entropy: Annotated[
        bool, typer.Option("--entropy", help="write a compressed .vqa bitstream, range-coded under the learned prior")
    ] = False,
    prior_checkpoint: PriorOpt = None,
    bottom: BottomOpt = None,
    force: ForceOpt = False,
    device: DeviceOpt = "auto",
) -> None:
    """Turn a recording into VQ-VAE codes (or, with --entropy, a compressed .vqa bitstream)."""
    from vqaudio.audio.io import expected_samples
    from vqaudio.codec import encode_file, load_codec
    from vqaudio.device import resolve_device
    from vqaudio.progress import progress_bar

    if entropy:
        _encode_entropy(source, target, checkpoint, speaker, n_q, prior_checkpoint, bottom, force, device)
        return
    if bottom is not None:
        raise VQAudioError("--bottom: the bottom prior is for --entropy (a .vqa file of two-level codes)")
    codec = load_codec(_checkpoint_or_newest(checkpoint), resolve_device(device))
    with progress_bar("encode", expected_samples(source, codec.sample_rate), "samples") as update:
        side = encode_file(codec, source, target, speaker=speaker, force=force, on_progress=update, n_q=n_q)
    seconds = side["num_samples"] / codec.sample_rate
    books = f" x {side['n_q']} codebooks" if side["n_q"] > 1 else ""
    if "top" in side:
        books += f" + {side['top']['frames']} top frames"
    out.print(
        f"wrote {target} ({side['shape'][-1]} frames{books} for {seconds:.2f} s at {side['bitrate']:.0f} bit/s, "
        f"speaker {side['speaker'] or 'not recorded'})"
    )


def _encode_entropy(
    source: Path, target: Path, checkpoint: Path | None, speaker: str | None, n_q: int | None,
    prior_checkpoint: Path | None, bottom: Path | None, force: bool, device: str,
) -> None:  # fmt: skip
    from vqaudio.audio.io import iter_audio
    from vqaudio.bitstream import entropy_encode, write_vqa
    from vqaudio.codec import encode_chunks, guess_speaker
    from vqaudio.fileio import check_writable
    from vqaudio.progress import progress_bar

    check_writable(target, force)
    prior, bottom_prior = _prior_pair(prior_checkpoint, bottom, checkpoint, device)
    codec = prior.codec
    if n_q is not None and n_q != codec.n_q:
        raise VQAudioError(f"--n-q {n_q}: the prior models all {codec.n_q} codebook(s); --entropy codes them all")
    speaker = speaker if speaker is not None else guess_speaker(source, codec.speakers)
    if speaker is None:
        err.print(f"no speaker given or found in the file name: recording speaker {codec.speakers[0]} (--speaker to choose)")
    index = codec.speaker_index(speaker)
    audio = encode_chunks(codec, iter_audio(source, codec.sample_rate))
    top_frames = audio.top.shape[1] if audio.top is not None else 0
    with progress_bar("entropy-code", audio.codes.shape[1] + top_frames, "frames") as update:
        encoded = entropy_encode(prior, audio.codes, index, audio.num_samples, update, audio.top, bottom_prior)
    write_vqa(target, encoded, force)
    seconds = audio.num_samples / codec.sample_rate
    out.print(
        f"wrote {target} ({len(encoded.data)} bytes for {seconds:.2f} s: {8 * len(encoded.data) / seconds:.0f} bit/s; "
        f"raw codes {codec.bitrate():.0f} bit/s; prior estimate {encoded.estimated_bits / seconds:.0f} bit/s)",
        soft_wrap=True,
    )


def _prior_pair(prior_checkpoint: Path | None, bottom: Path | None, vqvae: Path | None, device: str):
    """The prior for .vqa files (--prior, default the newest) and, for a two-level model, its bottom prior."""
    from vqaudio.device import resolve_device
    from vqaudio.prior import load_prior_pair

    chosen = _checkpoint_or_newest(prior_checkpoint, "code_prior")
    return load_prior_pair(chosen, resolve_device(device), bottom, vqvae, chosen=prior_checkpoint is None)


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
    prior_checkpoint: PriorOpt = None,
    bottom: BottomOpt = None,
    force: ForceOpt = False,
    device: DeviceOpt = "auto",
) -> None:
    """Turn codes (.npy, .npz or .vqa) back into audio with the WaveNet decoder (another --speaker converts the voice)."""
    from vqaudio.codec import decode_file, load_codec, open_codes
    from vqaudio.device import resolve_device
    from vqaudio.progress import progress_bar

    _check_backend(backend)
    from vqaudio.bitstream import is_vqa

    if is_vqa(source):
        codec, request = _open_vqa(source, target, checkpoint, prior_checkpoint, bottom, speaker, force, device)
    else:
        if bottom is not None:
            raise VQAudioError("--bottom: the bottom prior is for .vqa files of two-level codes")
        codec = load_codec(_checkpoint_or_newest(checkpoint), resolve_device(device))
        request = open_codes(codec, source, target, speaker, force)
    with progress_bar("decode", request.num_samples, "samples") as update:
        info = decode_file(codec, request, target, force, temperature, seed, on_progress=update, backend=backend)
    out.print(f"wrote {target} ({info['num_samples'] / info['sample_rate']:.2f} s at {info['sample_rate']} Hz, speaker {info['speaker']})")


@app.command()
def convert(
    source: Annotated[Path, typer.Argument(help="recording to convert (anything soundfile reads)")],
    target: Annotated[Path, typer.Argument(help="wav file to write")],
    speaker: Annotated[str, typer.Option("--speaker", help="the voice to convert to: index or name")],
    checkpoint: CheckpointOpt = None,
    temperature: Annotated[float, typer.Option("--temperature", help="sampling temperature; 0 = most likely")] = 1.0,
    seed: Annotated[int, typer.Option("--seed", help="random seed for sampling")] = 0,
    backend: Annotated[str, typer.Option("--backend", help="auto, fast, plain or cuda-graph")] = "auto",
    force: ForceOpt = False,
    device: DeviceOpt = "auto",
) -> None:
    """Voice conversion: encode a recording and decode its codes as another speaker."""
    from vqaudio.audio.io import expected_samples
    from vqaudio.codec import convert_file, load_codec
    from vqaudio.device import resolve_device
    from vqaudio.progress import progress_bar

    _check_backend(backend)
    codec = load_codec(_checkpoint_or_newest(checkpoint), resolve_device(device))
    with progress_bar("convert", expected_samples(source, codec.sample_rate), "samples") as update:
        info = convert_file(codec, source, target, speaker, force, temperature, seed, update, backend)  # type: ignore[arg-type]
    out.print(f"wrote {target} ({info['num_samples'] / info['sample_rate']:.2f} s, voice of {info['speaker']})", soft_wrap=True)


@app.command()
def sample(
    speaker: Annotated[Optional[str], typer.Option("--speaker", help="speech: index or name; default 0")] = None,
    label: Annotated[Optional[str], typer.Option("--label", help="images: class index or name (cat)")] = None,
    seconds: Annotated[float, typer.Option("--seconds", help="length of each sample")] = 4.0,
    count: Annotated[int, typer.Option("-n", help="how many samples")] = 1,
    out_dir: Annotated[
        Path, typer.Option("-o", "--out", help="folder for the wav and codes files (images: a .png file or a folder)")
    ] = Path("samples"),
    checkpoint: Annotated[
        Optional[Path], typer.Option("-c", "--checkpoint", help="prior checkpoint; default: the newest prior under ./runs")
    ] = None,
    vqvae: Annotated[Optional[Path], typer.Option("--vqvae", help="the prior's VQ-VAE checkpoint, if it has moved")] = None,
    bottom: BottomOpt = None,
    temperature: Annotated[float, typer.Option("--temperature", help="prior sampling temperature")] = 1.0,
    decoder_temperature: Annotated[float, typer.Option("--decoder-temperature", help="WaveNet decoder temperature")] = 1.0,
    seed: Annotated[int, typer.Option("--seed", help="random seed")] = 0,
    backend: Annotated[str, typer.Option("--backend", help="generation back end: auto, fast, plain or cuda-graph")] = "auto",
    force: ForceOpt = False,
    device: DeviceOpt = "auto",
) -> None:
    """Generate: sample codes from a learned prior and decode them (speech with --speaker, images with --label)."""
    from vqaudio.train.checkpoint import checkpoint_kind

    if label is not None or (checkpoint is not None and checkpoint_kind(checkpoint) == "image_prior"):
        if speaker is not None:
            raise VQAudioError("--speaker is for speech priors and --label for image priors; give one")
        _sample_images(label, count, out_dir, checkpoint, vqvae, bottom, temperature, seed, force, device)
        return
    from vqaudio.audio.io import write_wav
    from vqaudio.codec import write_codes
    from vqaudio.device import resolve_device
    from vqaudio.fileio import check_writable
    from vqaudio.prior import decode_samples, load_prior_pair, sample_lengths, sample_prior_codes
    from vqaudio.progress import progress_bar

    _check_backend(backend)
    prior, bottom_prior = load_prior_pair(
        _checkpoint_or_newest(checkpoint, "code_prior"), resolve_device(device), bottom, vqvae, chosen=checkpoint is None
    )
    codec = prior.codec
    name = codec.speakers[codec.speaker_index(speaker)]
    stems = [f"{name}_seed{seed}_{i}" for i in range(count)]
    codes_suffix = ".npz" if codec.two_level else ".npy"
    for stem in stems:
        for suffix in (".wav", codes_suffix, f"{codes_suffix}.json"):
            check_writable(out_dir / f"{stem}{suffix}", force)
    num_samples, frames = sample_lengths(prior, seconds)
    with progress_bar("sample codes", frames, "frames") as update:
        codes, index, top = sample_prior_codes(prior, speaker, seconds, count, temperature, seed, update, backend, bottom_prior)
    with progress_bar("decode", frames * codec.hop, "samples") as update:
        audio = decode_samples(prior, codes, index, decoder_temperature, seed, backend, update, top)
    source = f"sampled from {prior.checkpoint.resolve()}" + (f" and {bottom_prior.checkpoint.resolve()}" if bottom_prior else "")
    for i, stem in enumerate(stems):
        write_wav(out_dir / f"{stem}.wav", audio[i, :num_samples], codec.sample_rate, force=True)
        one_top = top[i] if top is not None else None
        write_codes(codec, codes[i], out_dir / f"{stem}{codes_suffix}", index, num_samples, source, True, one_top)
        out.print(f"wrote {out_dir / stem}.wav and its codes", soft_wrap=True)


def _sample_images(
    label: str | None, count: int, out_path: Path, checkpoint: Path | None, vqvae: Path | None, bottom: Path | None,
    temperature: float, seed: int, force: bool, device: str,
) -> None:  # fmt: skip
    import torch

    from vqaudio.device import resolve_device
    from vqaudio.fileio import check_writable
    from vqaudio.image_codec import load_prior_pair, sample_images, sample_rows
    from vqaudio.image_grid import grid, save_png
    from vqaudio.progress import progress_bar

    loaded, second = load_prior_pair(_checkpoint_or_newest(checkpoint, "image_prior"), resolve_device(device), bottom, vqvae)
    index = loaded.prior.label_index(label)
    name = loaded.prior.class_names[index]
    target = out_path if out_path.suffix.lower() == ".png" else out_path / f"{name}_seed{seed}.png"
    check_writable(target, force)
    if count < 1:
        raise VQAudioError(f"-n {count}: must be at least 1")
    device_ = next(loaded.prior.model.parameters()).device
    labels = torch.full((count,), index, dtype=torch.long, device=device_)
    with progress_bar("sample code rows", sample_rows(loaded, second), "rows") as update:
        images = sample_images(loaded, second, labels, temperature, torch.Generator().manual_seed(seed), update)
    save_png(grid(images), target, force)
    out.print(f"wrote {target} ({count} samples of class {index} '{name}')", soft_wrap=True)


@app.command("eval")
def eval_command(
    checkpoint: CheckpointOpt = None,
    data: Annotated[
        Optional[str],
        typer.Option("--data", help="folder or audio file, or RECIPE.yaml[:valid|train|all]; default: the model's held-out split"),
    ] = None,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="also write the report (per-clip rows) to this JSON file")] = None,
    n_q: Annotated[Optional[int], typer.Option("--n-q", help="residual VQ: codebooks to keep (the bitrate)")] = None,
    temperature: Annotated[float, typer.Option("--temperature", help="decoder sampling temperature; 0 = most likely")] = 1.0,
    seed: Annotated[int, typer.Option("--seed", help="random seed for sampling")] = 0,
    backend: Annotated[str, typer.Option("--backend", help="auto, fast, plain or cuda-graph")] = "auto",
    baselines: Annotated[bool, typer.Option("--baselines/--no-baselines", help="run Opus and Codec2 when installed")] = True,
    max_clips: Annotated[Optional[int], typer.Option("--max-clips", help="evaluate only the first N clips")] = None,
    audio_dir: Annotated[
        Optional[Path], typer.Option("--audio-dir", help="write each reference and reconstruction here for listening")
    ] = None,
    prior_checkpoint: Annotated[
        Optional[Path], typer.Option("--prior", help="also entropy-code every clip under this prior (.vqa bitrate)")
    ] = None,
    bottom: BottomOpt = None,
    force: ForceOpt = False,
    device: DeviceOpt = "auto",
) -> None:
    """Reconstruct held-out clips through the codes and measure them beside Opus and Codec2.

    -c may name a prior checkpoint: its VQ-VAE is evaluated and the clips are entropy-coded too."""
    from vqaudio.codec import load_codec
    from vqaudio.device import resolve_device
    from vqaudio.evaluation.baselines import available_baselines
    from vqaudio.evaluation.clips import select_clips
    from vqaudio.evaluation.evaluate import EvalOptions, evaluate
    from vqaudio.evaluation.report import render_report, write_report
    from vqaudio.fileio import check_writable
    from vqaudio.prior import load_prior_pair
    from vqaudio.progress import progress_bar
    from vqaudio.train.checkpoint import checkpoint_kind

    _check_backend(backend)
    if json_out is not None:
        check_writable(json_out, force)
    if max_clips is not None and max_clips < 1:
        raise VQAudioError(f"--max-clips {max_clips}: must be at least 1")
    prior = None
    kind = checkpoint_kind(checkpoint) if checkpoint is not None else None
    if kind in ("image_vqvae", "image_vae", "image_vqvae2", "image_prior"):
        audio_only = [name for name, value in (("--data", data), ("--n-q", n_q), ("--audio-dir", audio_dir)) if value is not None]
        if audio_only:
            raise VQAudioError(f"{', '.join(audio_only)}: audio options; an image model is scored on its own held-out images")
        _eval_images(checkpoint, prior_checkpoint, bottom, json_out, max_clips, force, device)
        return
    if kind == "code_prior" and prior_checkpoint is None:
        prior_checkpoint, checkpoint = checkpoint, None
    bottom_prior = None
    if prior_checkpoint is not None:
        prior, bottom_prior = load_prior_pair(prior_checkpoint, resolve_device(device), bottom, checkpoint)
        codec = prior.codec
    else:
        if bottom is not None:
            raise VQAudioError("--bottom goes with the top prior (--prior or -c TOP_PRIOR) of a two-level model")
        codec = load_codec(_checkpoint_or_newest(checkpoint), resolve_device(device))
    options = EvalOptions(n_q, temperature, seed, backend, baselines, audio_dir=audio_dir)  # type: ignore[arg-type]
    codec.check_n_q(n_q)
    with preparation_bar("prepare data") as update:
        clips, description = select_clips(data, codec.recipe, codec.sample_rate, codec.speakers, update)
    clips = clips[:max_clips] if max_clips else clips
    systems = 1 + (len(available_baselines()[0]) if baselines else 0)
    with progress_bar("eval", len(clips) * systems, "runs") as update:
        report = evaluate(codec, clips, description, options, on_progress=update, prior=prior, bottom_prior=bottom_prior)
    render_report(report, out)
    if json_out is not None:
        write_report(report, json_out, force)
        out.print(f"wrote {json_out}", soft_wrap=True)


def _eval_images(
    checkpoint: Path, prior_checkpoint: Path | None, bottom: Path | None, json_out: Path | None, max_images: int | None,
    force: bool, device: str,
) -> None:
    """eval on an image VQ-VAE or VAE (or an image prior: its VQ-VAE under it): bits/dim and a PNG."""
    import numpy as np
    from rich.table import Table

    from vqaudio.device import resolve_device
    from vqaudio.evaluation.images import evaluate_images
    from vqaudio.evaluation.report import write_report
    from vqaudio.image_codec import load_image_model, load_prior_pair
    from vqaudio.image_grid import grid, save_png
    from vqaudio.train.checkpoint import checkpoint_kind

    dev = resolve_device(device)
    prior = bottom_prior = None
    if checkpoint_kind(checkpoint) == "image_prior":
        prior_checkpoint = checkpoint
    if prior_checkpoint is not None:
        first, second = load_prior_pair(prior_checkpoint, dev, bottom)
        model, prior = first.vqvae, first.prior
        bottom_prior = second.prior if second is not None else None
    else:
        model = load_image_model(checkpoint, dev)
    png = model.checkpoint.resolve().parent.parent / "eval_reconstructions.png"
    with err.status("scoring held-out images"):
        report, shown = evaluate_images(model, prior, max_images, bottom_prior=bottom_prior)
    save_png(grid(np.concatenate(shown), columns=shown.shape[1]), png, force=True)
    table = Table(title=f"{report['images']} held-out images, {report['kind']} step {report['step']}")
    table.add_column("bits/dim", no_wrap=True)
    table.add_column("value", justify="right")
    for key, value in report.items():
        if "bits" in key:
            table.add_row(key, f"{value:.3f}")
    out.print(table)
    out.print(f"wrote {png} (originals above reconstructions)", soft_wrap=True)
    if json_out is not None:
        write_report(report, json_out, force)
        out.print(f"wrote {json_out}", soft_wrap=True)


@app.command()
def plot(
    run_dir: Annotated[Path, typer.Argument(help="a run folder (runs/<name>/<timestamp> or runs/latest)")],
    checkpoint: Annotated[
        Optional[Path], typer.Option("-c", "--checkpoint", help="model checkpoint; default: the run's newest")
    ] = None,
    clip: Annotated[
        Optional[str], typer.Option("--clip", help="held-out clip id or an audio file for the spectrograms; default: the first")
    ] = None,
    data: Annotated[
        Optional[str], typer.Option("--data", help="clips for the usage histogram, as for eval; default: held-out split")
    ] = None,
    temperature: Annotated[float, typer.Option("--temperature", help="decoder sampling temperature")] = 1.0,
    seed: Annotated[int, typer.Option("--seed", help="random seed for sampling")] = 0,
    device: DeviceOpt = "auto",
) -> None:
    """Draw a run: training curves, original vs reconstruction spectrograms, codebook usage (PNG)."""
    from vqaudio.codec import load_codec
    from vqaudio.device import resolve_device
    from vqaudio.evaluation.clips import select_clips
    from vqaudio.plots import plot_run
    from vqaudio.train.checkpoint import list_checkpoints
    from vqaudio.train.run_dir import resolve_run_dir

    run = resolve_run_dir(run_dir)
    codec = load_codec(checkpoint or list_checkpoints(run)[-1], resolve_device(device))
    with preparation_bar("prepare data") as update:
        clips, _ = select_clips(data, codec.recipe, codec.sample_rate, codec.speakers, update)
    if clip is not None and Path(clip).is_file():
        own, _ = select_clips(clip, codec.recipe, codec.sample_rate, codec.speakers)
        clips, clip = own + clips, own[0].id
    with err.status("decoding the clip and drawing"):
        written = plot_run(run, codec, clips, clip, temperature, seed)
    for path in written:
        out.print(f"wrote {path}", soft_wrap=True)


def _open_vqa(
    source: Path, target: Path, checkpoint: Path | None, prior_checkpoint: Path | None, bottom: Path | None,
    speaker: str | None, force: bool, device: str,
):  # fmt: skip
    """Entropy-decode a .vqa file into a DecodeRequest (the codes, top codes, speaker and length)."""
    from vqaudio.bitstream import entropy_decode_levels
    from vqaudio.codec import DecodeRequest
    from vqaudio.fileio import check_writable
    from vqaudio.progress import progress_bar

    check_writable(target, force)
    prior, bottom_prior = _prior_pair(prior_checkpoint, bottom, checkpoint, device)
    data = source.read_bytes()
    with progress_bar("entropy-decode", None, "frames") as update:
        codes, top, header = entropy_decode_levels(prior, data, source, update, bottom_prior)
    index = prior.codec.speaker_index(speaker) if speaker is not None else header.speaker_index
    return prior.codec, DecodeRequest(codes, index, header.num_samples, top)


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


def _torchrun_rank() -> int:
    """This process's rank in a torchrun job of several processes (0 otherwise)."""
    import os

    try:
        return int(os.environ.get("RANK", "0")) if int(os.environ.get("WORLD_SIZE", "1")) > 1 else 0
    except ValueError:
        return 0


def main() -> None:
    rank = _torchrun_rank()
    if rank:  # rank 0 speaks for a torchrun job; the others only report their own errors
        out.quiet = err.quiet = True
    try:
        status = app(standalone_mode=False)
        if isinstance(status, int) and status:  # an explicit exit code (typer.Exit)
            sys.exit(status)
    except typer.Abort:
        sys.exit(130)
    except VQAudioError as exc:
        err.quiet = False
        prefix = f"rank {rank}: " if rank else ""
        err.print(f"{prefix}[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except TrainingInterrupted as exc:
        err.print(f"[yellow]interrupted:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(130)
    except Exception as exc:
        if not _is_usage_error(exc):
            raise
        # unknown option, missing argument, bad value: one line too, naming the command's help
        context = getattr(exc, "ctx", None)
        where = context.command_path if context is not None else "vqaudio"
        message = exc.format_message()  # type: ignore[attr-defined]
        if message:  # `vqaudio` alone has already printed the help
            err.quiet = False
            err.print(f"[bold red]error:[/] {escape(message)} (see {where} --help)", highlight=False, soft_wrap=True)
        sys.exit(2)


def _is_usage_error(exc: BaseException) -> bool:
    """A command-line usage error from typer's click (typer vendors click, so match by class name)."""
    return any(cls.__name__ == "UsageError" for cls in type(exc).__mro__)
