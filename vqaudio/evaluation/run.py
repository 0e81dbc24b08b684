"""What `vqaudio eval` does, as one function: load whatever `-c` names and measure it.

An audio VQ-VAE is measured on audio beside the classical codecs (with a prior, its clips are
entropy-coded too); an image model on its held-out images in bits/dim; a prior stands for the
VQ-VAE under it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vqaudio.errors import VQAudioError
from vqaudio.evaluation.baselines import available_baselines, choose_baselines
from vqaudio.evaluation.clips import select_clips
from vqaudio.evaluation.conversion import conversion_runs, evaluate_conversion
from vqaudio.evaluation.evaluate import EvalOptions, choose_metrics, evaluate
from vqaudio.evaluation.images import evaluate_images
from vqaudio.evaluation.listening import build_page, write_page
from vqaudio.evaluation.report import write_report
from vqaudio.fileio import check_writable
from vqaudio.formats.images import grid, save_png
from vqaudio.generation.packed import set_precision
from vqaudio.inference.load import (
    PRIOR_KINDS,
    Codec,
    ImageModel,
    ImagePrior,
    Prior,
    checkpoint_or_newest,
    load,
)
from vqaudio.inference.priors import with_partner
from vqaudio.recipe import IMAGE_MODELS

Progress = Callable[[str, int | None, str], contextlib.AbstractContextManager]


@dataclass
class EvalRequest:
    checkpoint: Path | None = None
    prior: Path | None = None
    bottom: Path | None = None
    data: str | None = None
    json_out: Path | None = None
    options: EvalOptions | None = None
    max_clips: int | None = None
    force: bool = False
    convert: bool = False  # also decode every clip as other speakers (voice conversion)
    to: list[str] | None = None  # the target speakers of --convert (default: every speaker with a clip here)
    html: Path | None = None  # a self-contained listening page (--html)


@dataclass
class EvalResult:
    report: dict[str, Any]
    images: bool  # an image model's bits/dim report (else the audio report)
    written: list[Path]  # files written besides the table (reconstruction PNG, JSON)


def run_eval(request: EvalRequest, device: torch.device, progress: Progress | None = None) -> EvalResult:
    """Load the model (`-c`: a checkpoint or run folder; default the newest audio VQ-VAE) and
    evaluate it; writes the JSON report when asked."""
    options = request.options or EvalOptions()
    bar = progress or (lambda *_: contextlib.nullcontext(None))
    for path in (request.json_out, request.html):
        if path is not None:
            check_writable(path, request.force)
    if request.max_clips is not None and request.max_clips < 1:
        raise VQAudioError(f"--max-clips {request.max_clips}: must be at least 1")
    if request.prior is not None:  # -c, if given, is then the prior's VQ-VAE
        first = load(request.prior, device, request.checkpoint, kinds=PRIOR_KINDS)
    else:
        kinds = ("audio_vqvae", *IMAGE_MODELS, *PRIOR_KINDS)
        first = load(checkpoint_or_newest(request.checkpoint, ("audio_vqvae",)), device, kinds=kinds)
    if isinstance(first, (ImageModel, ImagePrior)):
        return _eval_images(request, first, device)
    prior = bottom_prior = None
    if isinstance(first, Prior):
        prior, bottom_prior = with_partner(first, device, request.bottom, request.checkpoint if request.prior else None)
        codec = prior.codec
    else:
        if request.bottom is not None:
            raise VQAudioError("--bottom goes with the top prior (--prior or -c TOP_PRIOR) of a two-level model")
        assert isinstance(first, Codec)
        codec = first
    codec.check_n_q(options.n_q)
    set_precision(codec.model, options.precision)
    with bar("prepare data", None, "files") as update:
        clips, description = select_clips(request.data, codec.recipe, codec.sample_rate, codec.speakers, update)
    clips = clips[: request.max_clips] if request.max_clips else clips
    choose_metrics(options.metrics)  # a typo in --metrics is refused before any work
    systems = 1 + len(available_baselines(choose_baselines(options.baselines))[0])
    if request.html is not None:
        options.listen = {}
    with bar("eval", len(clips) * systems, "runs") as update:
        report = evaluate(codec, clips, description, options, on_progress=update, prior=prior, bottom_prior=bottom_prior)
    if request.convert or request.to:
        with bar("convert", conversion_runs(codec, clips, request.to), "decodes") as update:
            report["conversion"] = evaluate_conversion(
                codec, clips, request.to, options.temperature, options.seed, options.backend, update
            )
    written = []
    if request.json_out is not None:
        write_report(report, request.json_out, request.force)
        written.append(request.json_out)
    if request.html is not None and options.listen is not None:
        write_page(request.html, build_page(report, clips, options.listen, codec.sample_rate, options.seed), request.force)
        written.append(request.html)
    return EvalResult(report, False, written)


def _eval_images(request: EvalRequest, first: ImageModel | ImagePrior, device: torch.device) -> EvalResult:
    """An image VQ-VAE or VAE (or an image prior: its VQ-VAE under it): bits/dim and a PNG of
    originals above reconstructions beside the run."""
    options = request.options or EvalOptions()
    given = (("--data", request.data), ("--n-q", options.n_q), ("--audio-dir", options.audio_dir), ("--to", request.to))
    audio_only = [name for name, value in (*given, ("--html", request.html)) if value is not None]
    audio_only += ["--convert"] if request.convert else []
    if audio_only:
        raise VQAudioError(f"{', '.join(audio_only)}: audio options; an image model is scored on its own held-out images")
    prior = bottom_prior = None
    if isinstance(first, ImagePrior):
        top, second = with_partner(first, device, request.bottom, request.checkpoint if request.prior else None)
        model, prior, bottom_prior = top.vqvae, top, second
    else:
        assert isinstance(first, ImageModel)
        model = first
    png = model.checkpoint.resolve().parent.parent / "eval_reconstructions.png"
    report, shown = evaluate_images(model, prior, request.max_clips, bottom_prior=bottom_prior)
    save_png(grid(np.concatenate(shown), columns=shown.shape[1]), png, force=True)
    written = [png]
    if request.json_out is not None:
        write_report(report, request.json_out, request.force)
        written.append(request.json_out)
    return EvalResult(report, True, written)
