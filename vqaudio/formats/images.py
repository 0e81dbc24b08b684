"""Writing a batch of images as one PNG grid (samples, or originals above reconstructions)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from vqaudio.fileio import atomic_output


def grid(images: np.ndarray, columns: int | None = None, pad: int = 2) -> np.ndarray:
    """uint8 [N, H, W, 3] -> one uint8 image with the N tiles in rows of `columns` (default: square)."""
    count, height, width, _ = images.shape
    columns = columns or math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    out = np.full((rows * (height + pad) + pad, columns * (width + pad) + pad, 3), 255, dtype=np.uint8)
    for index, image in enumerate(images):
        r, c = divmod(index, columns)
        top, left = pad + r * (height + pad), pad + c * (width + pad)
        out[top : top + height, left : left + width] = image
    return out


def save_png(image: np.ndarray, path: Path, force: bool = False) -> None:
    from PIL import Image

    with atomic_output(path, force=force) as tmp:
        Image.fromarray(image).save(tmp, format="PNG")
