"""Image data sets: CIFAR-10 in its official Python format, and folders of images (one per class).

A CIFAR batch file is a pickle, and a pickle can run code when loaded. Data files are untrusted
input, so they are read with a restricted unpickler that only rebuilds numpy arrays and plain
containers: any other global a file names is refused before it is imported.
"""

from __future__ import annotations

import io
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vqaudio.errors import VQAudioError
from vqaudio.recipe import DataConfig

CIFAR_TRAIN = [f"data_batch_{i}" for i in range(1, 6)]
CIFAR_TEST = ["test_batch"]
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")

# Everything a CIFAR-10 (or CIFAR-100) pickle needs: numpy's array reconstruction (under both of
# numpy's module names) and Python 2 byte strings. Nothing here can run arbitrary code.
_ALLOWED = {
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}


class _RefusedGlobal(pickle.UnpicklingError):
    pass


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise _RefusedGlobal(f"global '{module}.{name}' is not allowed")


def restricted_load(path: Path) -> Any:
    """Unpickle a data file that may hold only numpy arrays, numbers, strings, bytes, lists and dicts."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise VQAudioError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        value = _RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load()
    except _RefusedGlobal as exc:
        raise VQAudioError(f"{path}: refused to unpickle: {exc}; a data file may hold only arrays and plain values") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError, MemoryError) as exc:
        raise VQAudioError(f"{path}: not a readable pickle (truncated or corrupt: {type(exc).__name__})") from None
    if isinstance(value, np.ndarray) and value.dtype == object:
        raise VQAudioError(f"{path}: holds an array of Python objects; refused")
    return value


@dataclass
class ImageSet:
    images: np.ndarray  # [N, H, W, 3] uint8
    labels: np.ndarray  # [N] int64
    class_names: list[str]

    def __len__(self) -> int:
        return len(self.labels)


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    if not path.exists():
        raise VQAudioError(f"{path}: missing; a CIFAR-10 folder holds data_batch_1..5, test_batch and batches.meta")
    batch = restricted_load(path)
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise VQAudioError(f"{path}: not a CIFAR-10 batch (expected a dict with b'data' and b'labels')")
    data, labels = batch[b"data"], np.asarray(batch[b"labels"])
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise VQAudioError(f"{path}: b'data' must be a uint8 array [N, 3072], found {getattr(data, 'shape', type(data))}")
    if labels.shape != (data.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
        raise VQAudioError(f"{path}: b'labels' must hold one integer per image")
    # Rows are 1024 red, then green, then blue values, each a 32x32 image in row-major order.
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy(), labels.astype(np.int64)


def load_cifar10(root: Path, split: str = "train") -> ImageSet:
    """The official `cifar-10-batches-py/` layout; `split` is train (the data_batch files present) or test."""
    root = Path(root)
    if not root.is_dir():
        raise VQAudioError(f"{root}: no such folder (expected cifar-10-batches-py/)")
    meta = restricted_load(root / "batches.meta") if (root / "batches.meta").exists() else None
    if not isinstance(meta, dict) or b"label_names" not in meta:
        raise VQAudioError(f"{root / 'batches.meta'}: missing or not a CIFAR-10 meta file (no b'label_names')")
    names = [_text(n) for n in meta[b"label_names"]]
    if split == "train":
        files = [root / f for f in CIFAR_TRAIN if (root / f).exists()]
        if not files:
            raise VQAudioError(f"{root}: no data_batch_* files")
    elif split == "test":
        files = [root / f for f in CIFAR_TEST]
    else:
        raise VQAudioError(f"split {split!r}: use train or test")
    parts = [_cifar_batch(f) for f in files]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    if labels.min() < 0 or labels.max() >= len(names):
        raise VQAudioError(f"{root}: labels outside 0..{len(names) - 1}")
    return ImageSet(images, labels, names)


def load_image_folder(root: Path, size: int | None = None) -> ImageSet:
    """One sub-folder per class (sorted names are the classes); images converted to RGB.

    All images must share one size unless `size` is given, in which case each is resized to size x size."""
    from PIL import Image, UnidentifiedImageError

    root = Path(root)
    if not root.is_dir():
        raise VQAudioError(f"{root}: no such folder")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    if not classes:
        raise VQAudioError(f"{root}: no class sub-folders (expected one folder of images per class)")
    images, labels = [], []
    for label, name in enumerate(classes):
        for path in sorted((root / name).rglob("*")):
            if path.suffix.lower() not in IMAGE_SUFFIXES or not path.is_file():
                continue
            try:
                with Image.open(path) as image:
                    image = image.convert("RGB")
                    if size is not None:
                        image = image.resize((size, size), Image.BICUBIC)
                    array = np.asarray(image, dtype=np.uint8)
            except (UnidentifiedImageError, OSError) as exc:
                raise VQAudioError(f"{path}: not a readable image ({exc})") from None
            if images and array.shape != images[0].shape:
                raise VQAudioError(
                    f"{path}: {array.shape[1]}x{array.shape[0]}, but earlier images are "
                    f"{images[0].shape[1]}x{images[0].shape[0]}; set a size to resize them all"
                )
            images.append(array)
            labels.append(label)
    if not images:
        raise VQAudioError(f"{root}: no images ({', '.join(IMAGE_SUFFIXES)}) in its class folders")
    return ImageSet(np.stack(images), np.array(labels, dtype=np.int64), classes)


def load_image_splits(config: DataConfig) -> tuple[ImageSet, ImageSet]:
    """(train, held-out): CIFAR-10's own test batch, or every tenth image of a folder (by position)."""
    root = Path(config.root or "")
    if config.kind == "cifar10":
        return load_cifar10(root, "train"), load_cifar10(root, "test")
    images = load_image_folder(root, config.image_size)
    held = np.zeros(len(images), dtype=bool)
    held[::10] = True
    if held.all():
        raise VQAudioError(f"{root}: too few images to hold any out for validation (found {len(images)})")
    pick = lambda mask: ImageSet(images.images[mask], images.labels[mask], images.class_names)  # noqa: E731
    return pick(~held), pick(held)
