"""Running a model for inference without changing it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn


@contextlib.contextmanager
def evaluating(model: nn.Module) -> Iterator[nn.Module]:
    """`model` in eval mode, without gradients, for the duration; every module's mode is put back
    afterwards. In training mode a quantiser learns from what it sees (EMA codebook, usage,
    restarts), so encoding, scoring and code extraction run in here and change no parameter or
    buffer, whatever mode the model was in."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        for module, training in modes:
            module.training = training
