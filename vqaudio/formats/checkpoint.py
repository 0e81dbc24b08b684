"""Checkpoint files: written atomically, read with `weights_only=True` (no pickled code ever runs)."""

from __future__ import annotations

import hashlib
import pickle
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError

from vqaudio.errors import VQAudioError
from vqaudio.fileio import atomic_output
from vqaudio.formats.metadata import METADATA, Metadata
from vqaudio.recipe import Recipe, validate_recipe

CHECKPOINT_FORMAT = "vqaudio-checkpoint"
CHECKPOINT_VERSION = 1


def model_fingerprint(state_dict: dict[str, torch.Tensor]) -> str:
    """A short hash of every weight and buffer: codes are only meaningful to the exact same model."""
    digest = hashlib.sha256()
    for key in sorted(state_dict):
        tensor = state_dict[key].detach().to("cpu").contiguous().reshape(-1)
        digest.update(key.encode())
        digest.update(str(tensor.dtype).encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()[:16]


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Write through a temporary file and rename, so a crash never leaves a half-written checkpoint."""
    payload = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, **payload}
    with atomic_output(path, force=True) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a vqaudio checkpoint safely; any problem is a one-line VQAudioError naming the file."""
    path = Path(path)
    if not path.exists():
        raise VQAudioError(f"{path}: no such checkpoint")
    if path.is_dir():
        raise VQAudioError(f"{path}: is a folder; give a checkpoint file (runs/.../checkpoints/step_NNNNNN.pt)")
    if not zipfile.is_zipfile(path):
        raise VQAudioError(f"{path}: not a readable checkpoint (not a PyTorch file, or truncated)")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL (\S+)", str(exc))
        what = f"it references {found.group(1)}" if found else "it holds objects other than weights"
        raise VQAudioError(
            f"{path}: refused to load: {what}, which could run code; only load checkpoints written by vqaudio"
        ) from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as exc:
        raise VQAudioError(f"{path}: not a readable checkpoint (truncated or corrupt: {str(exc).splitlines()[0][:120]})") from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise VQAudioError(f"{path}: not a vqaudio checkpoint")
    if payload.get("version") != CHECKPOINT_VERSION:
        raise VQAudioError(
            f"{path}: checkpoint format version {payload.get('version')!r} is not supported "
            f"(this vqaudio reads version {CHECKPOINT_VERSION})"
        )
    model = payload.get("model")
    if not isinstance(model, dict) or not all(isinstance(v, torch.Tensor) for v in model.values()):
        raise VQAudioError(f"{path}: damaged checkpoint: it holds no model weights")
    # The zip container has no checksum PyTorch checks: flipped bits would load as wrong weights.
    if payload.get("fingerprint") != model_fingerprint(model):
        raise VQAudioError(
            f"{path}: damaged checkpoint: its weights do not match the fingerprint written with them "
            "(a corrupted or edited file); use another checkpoint of the run"
        )
    return payload


def checkpoint_step(path: Path) -> int:
    """The step number in a checkpoint's file name (`step_000500.pt` -> 500)."""
    return int(path.stem.split("_")[-1])


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Checkpoints of a run, oldest first."""
    folder = run_dir / "checkpoints"
    if not folder.is_dir():
        return []
    return sorted(folder.glob("step_*.pt"), key=checkpoint_step)


@dataclass
class Checkpoint:
    """A checkpoint read and checked: its kind, recipe and metadata typed, its weights as saved."""

    path: Path
    kind: str
    step: int
    fingerprint: str
    recipe: Recipe
    metadata: Metadata
    valid: dict[str, float]
    weights: dict[str, torch.Tensor]
    payload: dict[str, Any]  # everything the file holds (optimiser state, RNG, ...) for resuming


def _typed(path: Path, payload: dict[str, Any]) -> tuple[str, Metadata]:
    kind = payload.get("kind")
    if kind not in METADATA:
        raise VQAudioError(f"{path}: holds a model of unknown kind {kind!r}")
    raw = payload.get("metadata")
    try:
        return kind, METADATA[kind].model_validate(raw if isinstance(raw, dict) else {})  # type: ignore[return-value]
    except ValidationError as exc:
        error = exc.errors()[0]
        key = ".".join(str(p) for p in error["loc"])
        problem = "missing" if error["type"] == "missing" else f"{error['msg']} (got {error.get('input')!r})"
        raise VQAudioError(f"{path}: incomplete checkpoint (metadata.{key}: {problem})") from None


def read_checkpoint(path: str | Path) -> Checkpoint:
    """Load a checkpoint (see `load_checkpoint`) and type what it records."""
    path = Path(path)
    payload = load_checkpoint(path)
    missing = [k for k in ("recipe", "metadata", "step") if k not in payload]
    if missing:
        raise VQAudioError(f"{path}: incomplete checkpoint (no {', '.join(missing)})")
    kind, metadata = _typed(path, payload)
    recipe = validate_recipe(payload["recipe"], f"{path} (embedded recipe)", saved=True)
    return Checkpoint(
        path, kind, int(payload["step"]), payload["fingerprint"], recipe, metadata,
        dict(payload.get("valid") or {}), payload["model"], payload,
    )  # fmt: skip


@dataclass
class CheckpointHeader:
    """What a checkpoint says about itself, read without its weights (for searching many files)."""

    path: Path
    kind: str | None
    metadata: dict[str, Any]


def read_header(path: Path) -> CheckpointHeader | None:
    """A checkpoint's kind and raw metadata, its tensors memory-mapped and never read nor hashed;
    None for a file that is not a readable vqaudio checkpoint. For finding a checkpoint among
    many (a top prior's bottom partner); whatever is then used is loaded with `read_checkpoint`."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - any unreadable file is simply not a candidate
        return None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        return None
    meta = payload.get("metadata")
    return CheckpointHeader(path, payload.get("kind"), meta if isinstance(meta, dict) else {})
