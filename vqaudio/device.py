"""Choosing the torch device: CUDA when present, the CPU otherwise, `--device` to override."""

from __future__ import annotations

import torch

from vqaudio.errors import VQAudioError


def resolve_device(requested: str | None = None) -> torch.device:
    """Return the device named by `requested` ('auto', 'cpu', 'cuda', 'cuda:1', ...)."""
    if requested is None or requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(requested)
    except RuntimeError as exc:
        raise VQAudioError(f"--device {requested!r} is not a device name; use auto, cpu, cuda or cuda:N") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise VQAudioError(f"--device {requested}: CUDA is not available on this machine; use --device cpu")
    return device
