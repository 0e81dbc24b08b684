"""Showing an evaluation report: a rich table of mean ± spread per system, and the JSON file."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from vqaudio.evaluation.evaluate import METRICS, MODEL_SYSTEM
from vqaudio.fileio import atomic_output


def _cell(summary: dict[str, Any], digits: int, spread: bool = True) -> str:
    if summary["mean"] is None:
        return "-"
    if not spread:
        return f"{summary['mean']:.{digits}f}"
    return f"{summary['mean']:.{digits}f}±{summary['std']:.{digits}f}"


def render_report(report: dict[str, Any], console: Console) -> None:
    """The table a person reads: one row per system, one column per metric."""
    title = (
        f"{report['clips_evaluated']} clips, {report['seconds']:.1f} s ({report['data']}); "
        f"model step {report['step']}, temperature {report['temperature']:g}"
    )
    # from the lowest bitrate up; the originals (scored by the no-reference metrics) last
    systems = sorted(report["systems"], key=lambda s: (s["bitrate"] is None, s["bitrate"] or 0.0))
    spread = len(systems) <= 4  # with more columns, means only (the spread is in the JSON report)
    if not spread:
        title += "; means over the clips (± in --json)"
    table = Table(title=title)  # one column per system, so that it fits 80 columns
    table.add_column("metric", no_wrap=True)
    for system in systems:
        table.add_column(system["name"], justify="right")
    table.add_row("bit/s", *("-" if system["bitrate"] is None else f"{system['bitrate']:.0f}" for system in systems))
    for metric in report.get("metrics", list(METRICS)):
        heading, higher_better = METRICS[metric]
        digits = 1 if metric == "si_snr" else 2
        cells = [_cell(system["summary"][metric], digits, spread) for system in systems]
        table.add_row(f"{heading} {'↑' if higher_better else '↓'}", *cells)
    table.add_row("lag ms", *(_cell(system["summary"]["lag_ms"], 1, spread) for system in systems))
    console.print(table)
    usage = report["codebook_usage"]
    model = next(system for system in report["systems"] if system["name"] == MODEL_SYSTEM)
    top = report.get("top_codebook_usage")
    levels = f"bottom: {report['n_q']} codebook(s)" if top else f"{report['n_q']} codebook(s)"
    console.print(
        f"model: {levels} of {usage['codebook_size']} at {model['bitrate'] - model.get('top_bitrate', 0):.0f} bit/s raw; "
        f"on these clips {usage['codes_used']:.0f} codes used, perplexity {usage['perplexity']:.1f}, "
        f"entropy {usage['entropy']:.2f} of {math.log2(usage['codebook_size']):.0f} bits"
    )
    if top:
        console.print(
            f"       top: 1 codebook of {top['codebook_size']} at {model['top_bitrate']:.0f} bit/s raw; "
            f"{top['codes_used']:.0f} codes used, perplexity {top['perplexity']:.1f}, "
            f"entropy {top['entropy']:.2f} of {math.log2(top['codebook_size']):.0f} bits"
        )
    if model["nll_bits_per_sample"] is not None:
        console.print(f"decoder likelihood: {model['nll_bits_per_sample']:.3f} bits per sample (-log2 p(x | codes), teacher-forced)")
    if "bits_per_sample_under_prior" in model:
        console.print(
            f"with the codes' bits under the prior(s): {model['bits_per_sample_under_prior']:.3f} bits per sample "
            "(an upper bound on -log2 p(x), the audio analogue of bits/dim)"
        )
    if "prior_bits_per_top_code" in model:
        console.print(
            f"under the priors: {model['prior_bitrate']:.0f} bit/s ({model['prior_bits_per_top_code']:.3f} bits per top code, "
            f"{model['prior_bits_per_bottom_code']:.3f} per bottom code given the top; raw {model['bitrate']:.0f} bit/s); "
            f"entropy-coded .vqa files {model['entropy_coded_bitrate']:.0f} bit/s (headers included)"
        )
    elif "entropy_coded_bitrate" in model:
        console.print(
            f"bitrate side by side: raw {model['bitrate']:.0f} bit/s ({math.log2(usage['codebook_size']):.0f} bits per code); "
            f"under the prior {model['prior_bitrate']:.0f} bit/s ({model['prior_bits_per_code']:.3f} bits per code); "
            f"entropy-coded .vqa files {model['entropy_coded_bitrate']:.0f} bit/s (headers included)"
        )
    for metric, reason in report["skipped_metrics"].items():
        console.print(f"[yellow]skipped {METRICS[metric][0]}:[/] {reason}")
    for note in report["notes"]:
        console.print(f"[yellow]note:[/] {note}")


def write_report(report: dict[str, Any], path: Path, force: bool = False) -> None:
    """The JSON report, written to a temporary file and renamed."""
    with atomic_output(path, force=force) as tmp:
        tmp.write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")


def render_image_report(report: dict[str, Any], console: Console) -> None:
    """An image model's bits/dim table."""
    table = Table(title=f"{report['images']} held-out images, {report['kind']} step {report['step']}")
    table.add_column("bits/dim", no_wrap=True)
    table.add_column("value", justify="right")
    for key, value in report.items():
        if "bits" in key:
            table.add_row(key, f"{value:.3f}")
    console.print(table)


def render_conversion(conversion: dict[str, Any], console: Console) -> None:
    """Voice conversion: similarity to the target and to the source speaker, and naturalness,
    of the converted clips beside the plain reconstructions."""
    table = Table(title=f"voice conversion to {', '.join(conversion['targets'])} (speaker embeddings: resemblyzer)")
    table.add_column("decoded as", no_wrap=True)
    for heading in ("clips", "sim. to target ↑", "sim. to source", "DNSMOS SIG ↑", "DNSMOS OVRL ↑"):
        table.add_column(heading, justify="right")
    for name, key in (("its own speaker", "reconstructed"), ("another speaker", "converted")):
        part = conversion[key]
        cells = [_cell(part[k], 2) for k in ("target_similarity", "source_similarity", "dnsmos_sig", "dnsmos_ovrl")]
        table.add_row(name, str(part["target_similarity"]["n"]), *cells)
    console.print(table)
