"""Random number generator state: captured into checkpoints and restored, the CPU's and CUDA's."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch


def capture_rng(device: torch.device) -> dict[str, Any]:
    """The CPU generator's state and, on a CUDA device, that device's."""
    rng: dict[str, Any] = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        rng["cuda"] = torch.cuda.get_rng_state(device)
    return rng


def restore_rng(rng: dict[str, Any], device: torch.device) -> None:
    """Put back what `capture_rng` took (a CUDA state only on a CUDA device)."""
    torch.set_rng_state(rng["torch"])
    if "cuda" in rng and device.type == "cuda":
        cuda_state = rng["cuda"]
        if isinstance(cuda_state, list):  # written by an older vqaudio: one state per GPU
            cuda_state = cuda_state[0]
        torch.cuda.set_rng_state(cuda_state, device)


@contextlib.contextmanager
def preserved_rng(device: torch.device) -> Iterator[None]:
    """Run something that draws random numbers (a probe) and leave every generator as it was."""
    saved = capture_rng(device)
    try:
        yield
    finally:
        restore_rng(saved, device)
