"""Where training metrics go: `metrics.jsonl` in the run folder, and TensorBoard when asked for."""

from __future__ import annotations

import importlib.util
import json
import time
from pathlib import Path
from typing import Any

from vqaudio.errors import VQAudioError


def check_tensorboard_available() -> None:
    """Fail before training starts, not at the first log line, when TensorBoard is missing."""
    if importlib.util.find_spec("tensorboard") is None:
        raise VQAudioError(
            "train.tensorboard=true needs the tensorboard package: pip install tensorboard "
            "(or set train.tensorboard=false)"
        )


class MetricsLog:
    """Appends one JSON line per record; with `tensorboard`, also writes event files to
    `run_dir/tensorboard` (scalars named `train/loss`, `valid/perplexity`, ...)."""

    def __init__(self, run_dir: Path, tensorboard: bool = False) -> None:
        self.path = run_dir / "metrics.jsonl"
        self.writer: Any = None
        if tensorboard:
            check_tensorboard_available()
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))

    def write(self, step: int, split: str, values: dict[str, float]) -> None:
        record = {"step": step, "split": split, "time": round(time.time(), 3), **values}
        with open(self.path, "a") as handle:
            handle.write(json.dumps(record) + "\n")
        if self.writer is not None:
            for key, value in values.items():
                self.writer.add_scalar(f"{split}/{key}", value, step)
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
