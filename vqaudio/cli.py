"""The `vqaudio` command line. Thin: it parses arguments and calls library functions."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

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
    Path | None, typer.Option("-c", "--checkpoint", help="model checkpoint or run folder; default: the newest under ./runs")
]
ForceOpt = Annotated[bool, typer.Option("--force", help="overwrite an existing output file")]
PrecisionOpt = Annotated[
    str, typer.Option("--precision", help="WaveNet weights for generation: fp32, or int8 (per-channel scales; docs/generation.md)")
]


def _newest(checkpoint: Path | None, kinds: tuple[str, ...] = ("audio_vqvae",), option: str = "-c") -> Path:
    """The checkpoint given (a file or a run folder), or the newest of `kinds` under ./runs (said on stderr)."""
    from vqaudio.inference.load import checkpoint_or_newest

    found = checkpoint_or_newest(checkpoint, kinds, option=option)
    if checkpoint is None:
        err.print(f"using checkpoint {found}")
    return found


def _bar(description: str, total: int | None, unit: str):
    from vqaudio.progress import progress_bar

    return progress_bar(description, total, unit)


def _check_precision(precision: str) -> None:
    from vqaudio.generation.packed import PRECISIONS

    if precision not in PRECISIONS:
        raise VQAudioError(f"--precision {precision!r}: choose {' or '.join(PRECISIONS)}")


def _check_backend(backend: str) -> None:
    if backend not in ("auto", "fast", "plain", "cuda-graph"):
        raise VQAudioError(f"--backend {backend!r}: choose auto, fast, plain or cuda-graph")


@app.command()
def train(
    recipe: Annotated[str | None, typer.Argument(help="recipe YAML (omit with --resume)")] = None,
    overrides: Annotated[list[str] | None, typer.Argument(help="KEY=VALUE overrides, e.g. train.steps=100")] = None,
    resume: Annotated[Path | None, typer.Option("--resume", help="continue the run in this folder")] = None,
    device: DeviceOpt = "auto",
    quiet: Annotated[bool, typer.Option("--quiet", help="no progress bar")] = False,
) -> None:
    """Train the model a recipe describes; Ctrl-C saves a checkpoint you can --resume."""
    from vqaudio.device import resolve_device
    from vqaudio.recipe import load_recipe
    from vqaudio.tasks.run import resume_recipe
    from vqaudio.tasks.run import train as run_training

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
    Path | None,
    typer.Option("--bottom", help="two-level models: the bottom prior (-c is the top one); default: the newest over the same model"),
]
PriorOpt = Annotated[
    Path | None, typer.Option("--prior", help="prior checkpoint for .vqa files; default: the newest prior under ./runs")
]


@app.command()
def encode(
    source: Annotated[Path, typer.Argument(help="audio file (anything soundfile reads)")],
    target: Annotated[Path, typer.Argument(help="codes file to write (.npy + .npy.json sidecar; .npz for a two-level model; .vqa with --entropy)")],
    checkpoint: CheckpointOpt = None,
    speaker: Annotated[str | None, typer.Option("--speaker", help="record this speaker (index or name)")] = None,
    n_q: Annotated[
        int | None, typer.Option("--n-q", help="residual VQ: keep the first N codebooks (the bitrate); default all")
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
    from vqaudio.device import resolve_device
    from vqaudio.inference.codec import encode_file
    from vqaudio.inference.entropy import encode_vqa_file
    from vqaudio.inference.load import load_codec
    from vqaudio.inference.priors import load_prior_pair

    if entropy:
        chosen = _newest(prior_checkpoint, ("code_prior",), "--prior")
        prior, bottom_prior = load_prior_pair(chosen, resolve_device(device), bottom, checkpoint, chosen=prior_checkpoint is None)
        with _bar("entropy-code", None, "frames") as update:
            written = encode_vqa_file(source, target, prior, bottom_prior, speaker, n_q, force, update)
        if written.speaker_guessed:
            err.print(f"no speaker given or found in the file name: recorded speaker {written.speaker} (--speaker to choose)")
        out.print(
            f"wrote {target} ({written.bytes} bytes for {written.seconds:.2f} s: {written.bitrate:.0f} bit/s; "
            f"raw codes {written.raw_bitrate:.0f} bit/s; prior estimate {written.estimated_bits / written.seconds:.0f} bit/s)",
            soft_wrap=True,
        )
        return
    if bottom is not None:
        raise VQAudioError("--bottom: the bottom prior is for --entropy (a .vqa file of two-level codes)")
    codec = load_codec(_newest(checkpoint), resolve_device(device))
    with _bar("encode", expected_samples(source, codec.sample_rate), "samples") as update:
        side = encode_file(codec, source, target, speaker=speaker, force=force, on_progress=update, n_q=n_q)
    seconds = side.num_samples / codec.sample_rate
    books = f" x {side.n_q} codebooks" if side.n_q > 1 else ""
    if side.top is not None:
        books += f" + {side.top.frames} top frames"
    frames = codec.frames_for(side.num_samples)
    out.print(
        f"wrote {target} ({frames} frames{books} for {seconds:.2f} s at {side.bitrate:.0f} bit/s, "
        f"speaker {side.speaker or 'not recorded'})"
    )


@app.command()
def decode(
    source: Annotated[Path, typer.Argument(help="codes file written by vqaudio encode")],
    target: Annotated[Path, typer.Argument(help="wav file to write")],
    checkpoint: CheckpointOpt = None,
    speaker: Annotated[str | None, typer.Option("--speaker", help="index or name; default: the sidecar's")] = None,
    temperature: Annotated[float, typer.Option("--temperature", help="sampling temperature; 0 = most likely")] = 1.0,
    seed: Annotated[int, typer.Option("--seed", help="random seed for sampling")] = 0,
    backend: Annotated[
        str, typer.Option("--backend", help="auto, fast (fused CPU kernel), plain (PyTorch) or cuda-graph")
    ] = "auto",
    precision: PrecisionOpt = "fp32",
    prior_checkpoint: PriorOpt = None,
    bottom: BottomOpt = None,
    force: ForceOpt = False,
    device: DeviceOpt = "auto",
) -> None:
    """Turn codes (.npy, .npz or .vqa) back into audio with the WaveNet decoder (another --speaker converts the voice)."""
    from vqaudio.device import resolve_device
    from vqaudio.fileio import check_writable
    from vqaudio.formats.vqa import is_vqa
    from vqaudio.generation.packed import set_precision
    from vqaudio.inference.codec import decode_file, open_codes
    from vqaudio.inference.entropy import open_vqa
    from vqaudio.inference.load import load_codec
    from vqaudio.inference.priors import load_prior_pair

    _check_backend(backend)
    _check_precision(precision)
    if is_vqa(source):
        check_writable(target, force)
        chosen = _newest(prior_checkpoint, ("code_prior",), "--prior")
        prior, bottom_prior = load_prior_pair(chosen, resolve_device(device), bottom, checkpoint, chosen=prior_checkpoint is None)
        with _bar("entropy-decode", None, "frames") as update:
            codec, request = open_vqa(source, prior, bottom_prior, speaker, update)
    else:
        if bottom is not None:
            raise VQAudioError("--bottom: the bottom prior is for .vqa files of two-level codes")
        codec = load_codec(_newest(checkpoint), resolve_device(device))
        request = open_codes(codec, source, target, speaker, force)
    set_precision(codec.model, precision)  # type: ignore[arg-type]
    with _bar("decode", request.num_samples, "samples") as update:
        info = decode_file(codec, request, target, force, temperature, seed, on_progress=update, backend=backend)  # type: ignore[arg-type]
    out.print(f"wrote {target} ({info.seconds:.2f} s at {info.sample_rate} Hz, speaker {info.speaker})")


@app.command()
def convert(
    source: Annotated[Path, typer.Argument(help="recording to convert (anything soundfile reads)")],
    target: Annotated[Path, typer.Argument(help="wav file to write")],
    speaker: Annotated[str, typer.Option("--speaker", help="the voice to convert to: index or name")],
    checkpoint: CheckpointOpt = None,
    temperature: Annotated[float, typer.Option("--temperature", help="sampling temperature; 0 = most likely")] = 1.0,
    seed: Annotated[int, typer.Option("--seed", help="random seed for sampling")] = 0,
    backend: Annotated[str, typer.Option("--backend", help="auto, fast, plain or cuda-graph")] = "auto",
    precision: PrecisionOpt = "fp32",
    force: ForceOpt = False,
    device: DeviceOpt = "auto",
) -> None:
    """Voice conversion: encode a recording and decode its codes as another speaker."""
    from vqaudio.audio.io import expected_samples
    from vqaudio.device import resolve_device
    from vqaudio.generation.packed import set_precision
    from vqaudio.inference.codec import convert_file
    from vqaudio.inference.load import load_codec

    _check_backend(backend)
    _check_precision(precision)
    codec = load_codec(_newest(checkpoint), resolve_device(device))
    set_precision(codec.model, precision)  # type: ignore[arg-type]
    with _bar("convert", expected_samples(source, codec.sample_rate), "samples") as update:
        info = convert_file(codec, source, target, speaker, force, temperature, seed, update, backend)  # type: ignore[arg-type]
    out.print(f"wrote {target} ({info.seconds:.2f} s, voice of {info.speaker})", soft_wrap=True)


@app.command()
def sample(
    speaker: Annotated[str | None, typer.Option("--speaker", help="speech: index or name; default 0")] = None,
    label: Annotated[str | None, typer.Option("--label", help="images: class index or name (cat)")] = None,
    seconds: Annotated[float, typer.Option("--seconds", help="length of each sample")] = 4.0,
    count: Annotated[int, typer.Option("-n", help="how many samples")] = 1,
    out_dir: Annotated[
        Path, typer.Option("-o", "--out", help="folder for the wav and codes files (images: a .png file or a folder)")
    ] = Path("samples"),
    checkpoint: Annotated[
        Path | None, typer.Option("-c", "--checkpoint", help="prior checkpoint; default: the newest prior under ./runs")
    ] = None,
    vqvae: Annotated[Path | None, typer.Option("--vqvae", help="the prior's VQ-VAE checkpoint, if it has moved")] = None,
    bottom: BottomOpt = None,
    temperature: Annotated[float, typer.Option("--temperature", help="prior sampling temperature")] = 1.0,
    decoder_temperature: Annotated[float, typer.Option("--decoder-temperature", help="WaveNet decoder temperature")] = 1.0,
    seed: Annotated[int, typer.Option("--seed", help="random seed")] = 0,
    backend: Annotated[str, typer.Option("--backend", help="generation back end: auto, fast, plain or cuda-graph")] = "auto",
    precision: PrecisionOpt = "fp32",
    force: ForceOpt = False,
    device: DeviceOpt = "auto",
) -> None:
    """Generate: sample codes from a learned prior and decode them (speech with --speaker, images with --label)."""
    from vqaudio.device import resolve_device
    from vqaudio.generation.packed import set_precision
    from vqaudio.inference.load import Prior
    from vqaudio.inference.priors import load_prior_pair
    from vqaudio.inference.sampling import sample_image_grid, sample_speech_files

    _check_backend(backend)
    _check_precision(precision)
    if speaker is not None and label is not None:
        raise VQAudioError("--speaker is for speech priors and --label for image priors; give one")
    kinds = ("image_prior",) if label is not None else ("code_prior", "image_prior") if speaker is None else ("code_prior",)
    chosen = _newest(checkpoint, kinds)
    first, second = load_prior_pair(chosen, resolve_device(device), bottom, vqvae, chosen=checkpoint is None, kinds=kinds)
    for prior in (first, second):
        if isinstance(prior, Prior):  # the priors and the decoder
            set_precision(prior.model, precision)  # type: ignore[arg-type]
            set_precision(prior.codec.model, precision)  # type: ignore[arg-type]
    if isinstance(first, Prior):
        files = sample_speech_files(first, second, out_dir, speaker, seconds, count, temperature, decoder_temperature,
                                    seed, backend, force, _bar)  # fmt: skip
        for wav in files.wavs:
            out.print(f"wrote {wav} and its codes", soft_wrap=True)
        return
    written = sample_image_grid(first, second, out_dir, label, count, temperature, seed, force, _bar)
    out.print(f"wrote {written.path} ({count} samples of class {written.label} '{written.name}')", soft_wrap=True)


@app.command("eval")
def eval_command(
    checkpoint: CheckpointOpt = None,
    data: Annotated[
        str | None,
        typer.Option("--data", help="folder or audio file, or RECIPE.yaml[:valid|train|all]; default: the model's held-out split"),
    ] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="also write the report (per-clip rows) to this JSON file")] = None,
    n_q: Annotated[int | None, typer.Option("--n-q", help="residual VQ: codebooks to keep (the bitrate)")] = None,
    temperature: Annotated[float, typer.Option("--temperature", help="decoder sampling temperature; 0 = most likely")] = 1.0,
    seed: Annotated[int, typer.Option("--seed", help="random seed for sampling")] = 0,
    backend: Annotated[str, typer.Option("--backend", help="auto, fast, plain or cuda-graph")] = "auto",
    precision: PrecisionOpt = "fp32",
    baselines: Annotated[
        str,
        typer.Option("--baselines", help="classical codecs beside the model: all, none, or some of opus6,opus8,opus12,codec2_1200,codec2_2400,codec2_3200"),
    ] = "all",
    no_baselines: Annotated[bool, typer.Option("--no-baselines", help="the same as --baselines none")] = False,
    metrics: Annotated[
        str | None,
        typer.Option("--metrics", help="a subset of the metrics, e.g. pesq_wb,stoi,visqol,warpq,dnsmos,speaker_sim; default all"),
    ] = None,
    convert: Annotated[
        bool, typer.Option("--convert", help="also decode every clip as the other speakers and measure the conversion")
    ] = False,
    to: Annotated[
        str | None, typer.Option("--to", help="--convert's target speakers, comma-separated names or indices")
    ] = None,
    html_out: Annotated[
        Path | None, typer.Option("--html", help="also write one self-contained page: players, spectrograms, a blind listening test")
    ] = None,
    max_clips: Annotated[int | None, typer.Option("--max-clips", help="evaluate only the first N clips")] = None,
    audio_dir: Annotated[
        Path | None, typer.Option("--audio-dir", help="write each reference and reconstruction here for listening")
    ] = None,
    prior_checkpoint: Annotated[
        Path | None, typer.Option("--prior", help="also entropy-code every clip under this prior (.vqa bitrate)")
    ] = None,
    bottom: BottomOpt = None,
    force: ForceOpt = False,
    device: DeviceOpt = "auto",
) -> None:
    """Reconstruct held-out clips through the codes and measure them beside Opus and Codec2.

    -c may name a prior checkpoint: its VQ-VAE is evaluated and the clips are entropy-coded too;
    or an image model or prior: bits/dim on its held-out images."""
    from vqaudio.device import resolve_device
    from vqaudio.evaluation.evaluate import EvalOptions
    from vqaudio.evaluation.report import (
        render_conversion,
        render_image_report,
        render_report,
    )
    from vqaudio.evaluation.run import EvalRequest, run_eval

    _check_backend(backend)
    chosen = "none" if no_baselines else baselines
    _check_precision(precision)
    options = EvalOptions(n_q, temperature, seed, backend, chosen, audio_dir=audio_dir, metrics=metrics, precision=precision)  # type: ignore[arg-type]
    targets = [t.strip() for t in to.split(",") if t.strip()] if to is not None else None
    request = EvalRequest(checkpoint, prior_checkpoint, bottom, data, json_out, options, max_clips, force, convert, targets, html_out)
    if checkpoint is None and prior_checkpoint is None:
        request.checkpoint = _newest(None)
    result = run_eval(request, resolve_device(device), _bar)
    if result.images:
        render_image_report(result.report, out)
    else:
        render_report(result.report, out)
        if "conversion" in result.report:
            render_conversion(result.report["conversion"], out)
    for path in result.written:
        out.print(f"wrote {path}", soft_wrap=True)


@app.command("listen-results")
def listen_results(
    files: Annotated[list[Path], typer.Argument(help="results downloaded from an eval --html page (.json or .csv)")],
    json_out: Annotated[Path | None, typer.Option("--json", help="also write the summary to this JSON file")] = None,
    force: ForceOpt = False,
) -> None:
    """Summarise listening-test results: per system the mean rating and its 95% interval."""
    from vqaudio.evaluation.listening import summarise_files

    summary = summarise_files(files, json_out, force)
    from rich.table import Table

    table = Table(title=f"{summary.ratings} ratings by {summary.listeners} listener(s) on {summary.clips} clip(s)")
    for heading in ("system", "ratings", "mean", "95% interval"):
        table.add_column(heading, justify="left" if heading == "system" else "right")
    for row in summary.systems:
        interval = "-" if row["ci95"] is None else f"±{row['ci95']:.1f}"
        table.add_row(row["system"], str(row["n"]), f"{row['mean']:.1f}", interval)
    out.print(table)
    if json_out is not None:
        out.print(f"wrote {json_out}", soft_wrap=True)


@app.command()
def plot(
    run_dirs: Annotated[
        list[Path], typer.Argument(help="a run folder (runs/<name>/<timestamp> or runs/latest); with --compare, runs or sweep folders")
    ],
    compare: Annotated[
        bool, typer.Option("--compare", help="overlay the runs' training curves and draw bitrate against --metric")
    ] = False,
    metric: Annotated[str, typer.Option("--metric", help="--compare: the rate-quality figure's metric")] = "pesq_wb",
    out_dir: Annotated[
        Path | None, typer.Option("-o", "--out", help="--compare: folder for the figures; default: the first folder given")
    ] = None,
    checkpoint: Annotated[
        Path | None, typer.Option("-c", "--checkpoint", help="model checkpoint; default: the run's newest")
    ] = None,
    clip: Annotated[
        str | None, typer.Option("--clip", help="held-out clip id or an audio file for the spectrograms; default: the first")
    ] = None,
    data: Annotated[
        str | None, typer.Option("--data", help="clips for the usage histogram, as for eval; default: held-out split")
    ] = None,
    temperature: Annotated[float, typer.Option("--temperature", help="decoder sampling temperature")] = 1.0,
    seed: Annotated[int, typer.Option("--seed", help="random seed for sampling")] = 0,
    device: DeviceOpt = "auto",
) -> None:
    """Draw a run: training curves, original vs reconstruction spectrograms, codebook usage (PNG).
    With --compare, several runs: their curves overlaid and a rate-quality figure."""
    from vqaudio.device import resolve_device
    from vqaudio.evaluation.plots import plot_run_dir

    if compare:
        from vqaudio.experiments.figures import plot_compare

        figures = plot_compare(run_dirs, metric, out_dir or run_dirs[0])
        baselines = f", baselines {', '.join(figures.baselines)}" if figures.baselines else ", no baseline rows found"
        out.print(f"wrote {figures.curves}", soft_wrap=True)
        out.print(f"wrote {figures.rate_quality} ({figures.runs} runs, {figures.points} points{baselines})", soft_wrap=True)
        return
    if len(run_dirs) != 1:
        raise VQAudioError(f"plot: give one run folder, or --compare for {len(run_dirs)}")
    with err.status("decoding the clip and drawing"):
        written = plot_run_dir(run_dirs[0], checkpoint, clip, data, temperature, seed, resolve_device(device))
    for path in written:
        out.print(f"wrote {path}", soft_wrap=True)


@app.command()
def sweep(
    sweep_file: Annotated[Path, typer.Argument(help="sweep file (recipes/sweeps/*.yaml)")],
    jobs: Annotated[int, typer.Option("-j", "--jobs", help="worker processes here, sharing the study")] = 1,
    worker: Annotated[
        bool, typer.Option("--worker", help="be one more worker of the study in --storage (any machine that reaches it)")
    ] = False,
    storage: Annotated[
        str | None, typer.Option("--storage", help="Optuna storage URL; default: sqlite:///<sweep folder>/study.db")
    ] = None,
    threads: Annotated[
        int | None, typer.Option("--threads", help="torch threads per worker; default: the cores shared among -j workers")
    ] = None,
    label: Annotated[str, typer.Option("--label", hidden=True, help="prefix of this worker's lines")] = "",
    quiet: Annotated[bool, typer.Option("--quiet", help="no progress bars")] = False,
    device: DeviceOpt = "auto",
) -> None:
    """Run a sweep on Optuna: every trial a run folder under runs/<sweep>/, trained, evaluated, compared."""
    from vqaudio.device import resolve_device
    from vqaudio.experiments.study import open_study, run_sweep, run_worker, storage_url
    from vqaudio.experiments.sweep_file import load_sweep

    if jobs < 1:
        raise VQAudioError(f"-j {jobs}: give at least one worker")
    if threads is not None and threads < 1:
        raise VQAudioError(f"--threads {threads}: must be at least 1")
    spec = load_sweep(sweep_file)
    url = storage_url(spec, storage)
    if worker:
        if threads:
            import torch

            torch.set_num_threads(threads)
        run_worker(spec, url, resolve_device(device), err, not quiet, label)
        return
    open_study(spec, url)  # the storage opens and the study matches this sweep file, or one line says why
    err.print(f"sweep {spec.name}: {spec.trials} trials ({spec.sampler}), {jobs} worker(s), study in {url}", soft_wrap=True)
    run_sweep(spec, url, resolve_device(device), jobs, err, threads, device, not quiet)
    _print_comparison([spec.folder], None)
    out.print(f"compare again with: vqaudio compare {spec.folder}", soft_wrap=True)


@app.command()
def compare(
    runs: Annotated[list[Path], typer.Argument(help="run folders, sweep folders, or folders of runs")],
    sort: Annotated[
        str | None, typer.Option("--sort", help="metric to sort by (pesq_wb, stoi, ..., valid.loss); default: the sweep's objective")
    ] = None,
    csv_out: Annotated[Path | None, typer.Option("--csv", help="also write the table as CSV")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="also write the table as JSON")] = None,
    markdown_out: Annotated[Path | None, typer.Option("--markdown", help="also write the table as Markdown")] = None,
    force: ForceOpt = False,
) -> None:
    """A table of the recipe keys that differ between runs and their final metrics, best first."""
    from vqaudio.experiments.compare import write_comparison

    comparison = _print_comparison(runs, sort)
    for kind, path in (("csv", csv_out), ("json", json_out), ("markdown", markdown_out)):
        if path is not None:
            out.print(f"wrote {write_comparison(comparison, path, kind, force)}", soft_wrap=True)


def _print_comparison(runs: list[Path], sort: str | None):
    from rich.table import Table

    from vqaudio.experiments.compare import cell, compare_runs

    comparison = compare_runs(runs, sort)
    arrow = "↑" if comparison.direction == "maximize" else "↓"
    table = Table(title=f"{len(comparison.runs)} runs, best {comparison.sort} {arrow} first", title_justify="left")
    for column, header in zip(comparison.columns, comparison.headers(), strict=True):
        numeric = column in comparison.metrics or column in ("steps", "bitrate")
        table.add_column(header, justify="right" if numeric else "left", style="bold" if column == comparison.sort else None, overflow="fold")
    for row in comparison.records():
        table.add_row(*(escape(cell(row[c])) for c in comparison.columns))
    out.print(table)
    return comparison


@app.command()
def info(checkpoint: Annotated[Path, typer.Argument(help="checkpoint file or run folder")]) -> None:
    """Describe a checkpoint (or a run folder's newest): recipe, step, speakers, hop, K and bitrate."""
    from vqaudio.inference.info import describe_checkpoint

    describe_checkpoint(checkpoint, out)


@app.command()
def export(
    checkpoint: Annotated[Path, typer.Argument(help="audio VQ-VAE checkpoint or run folder")],
    out_dir: Annotated[Path, typer.Argument(help="folder for the graphs and manifest.json")],
    graph_format: Annotated[str, typer.Option("--format", help="onnx, or torchscript (.pt files)")] = "onnx",
    force: Annotated[bool, typer.Option("--force", help="write into an existing non-empty folder")] = False,
) -> None:
    """Export a model as standalone graphs: encoder, and the conv decoder or the WaveNet's conditioning and step (docs/export.md)."""
    from vqaudio.inference.export import export_model

    with err.status(f"exporting {checkpoint} as {graph_format}"):
        result = export_model(checkpoint, out_dir, graph_format, force)
    for path in result.files:
        out.print(f"wrote {path}", soft_wrap=True)


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
