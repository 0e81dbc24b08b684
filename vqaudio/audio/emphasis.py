"""Pre-emphasis and de-emphasis (LPCNet's noise shaping for a μ-law WaveNet).

A WaveNet that predicts the pre-emphasised signal y[n] = x[n] - a x[n-1] spreads its μ-law
quantisation noise the way de-emphasis then shapes it: x[n] = y[n] + a x[n-1] is a low-pass
filter, so the noise falls under the speech's own spectral tilt instead of sitting flat and
audible at high frequencies.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.signal import lfilter


def pre_emphasis(audio: torch.Tensor, coefficient: float) -> torch.Tensor:
    """y[n] = x[n] - a x[n-1] along the last axis, with x[-1] = 0."""
    if coefficient == 0:
        return audio
    previous = torch.nn.functional.pad(audio[..., :-1], (1, 0))
    return audio - coefficient * previous


class DeEmphasis:
    """x[n] = y[n] + a x[n-1], applied block after block: the blocks' outputs join into exactly
    what one pass over the whole signal gives. Each row of a batch keeps its own state."""

    def __init__(self, coefficient: float) -> None:
        self.coefficient = coefficient
        self.state: np.ndarray | None = None

    def __call__(self, block: torch.Tensor) -> torch.Tensor:
        """A block [B, n] (or [n]) of the pre-emphasised signal -> the same block de-emphasised."""
        if self.coefficient == 0 or block.shape[-1] == 0:
            return block
        values = block.detach().cpu().double().numpy()
        if self.state is None:
            self.state = np.zeros((*values.shape[:-1], 1))
        out, self.state = lfilter([1.0], [1.0, -self.coefficient], values, axis=-1, zi=self.state)
        return torch.from_numpy(out).to(block.dtype)


def de_emphasis(audio: torch.Tensor, coefficient: float) -> torch.Tensor:
    """The whole signal at once (see `DeEmphasis`)."""
    return DeEmphasis(coefficient)(audio)
