"""The one bitrate formula: bits per second of raw (not entropy-coded) codes."""

from __future__ import annotations

import math


def bitrate(
    sample_rate: int, hop: int, codebook_size: int, n_q: int = 1, ratio: int = 1, top_codebook_size: int | None = None
) -> float:
    """Bits per second of `n_q` codebooks of `codebook_size` codes at one frame per `hop` samples,
    plus, for a two-level model, one top codebook of `top_codebook_size` at one frame per
    `hop * ratio` samples."""
    rate = n_q * sample_rate / hop * math.log2(codebook_size)
    if top_codebook_size:
        rate += sample_rate / (hop * ratio) * math.log2(top_codebook_size)
    return rate
