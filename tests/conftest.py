"""Shared fixtures: a tiny recipe that trains in seconds, the shared real data, an isolated cache."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import settings

# Real recordings and images: $VQAUDIO_TEST_DATA, by default ../shared/data beside the project.
SHARED = Path(os.environ.get("VQAUDIO_TEST_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")

# Property tests: CI runs a fixed, derandomised profile (the same examples every run, so a pass
# cannot flip); `HYPOTHESIS_PROFILE=explore` runs twenty times as many random examples locally.
# Every example that ever failed is pinned with @example beside its test.
settings.register_profile("ci", derandomize=True, database=None, deadline=None, print_blob=True)
settings.register_profile("explore", derandomize=False, deadline=None, print_blob=True)
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
settings.load_profile(PROFILE)


def examples(count: int) -> int:
    """A property test's number of examples under the active profile."""
    return count * (20 if PROFILE == "explore" else 1)

TINY: dict[str, Any] = {
    "name": "tiny",
    "seed": 0,
    "data": {
        "kind": "demo",
        "sample_rate": 16000,
        "crop_samples": 512,
        "valid_per_speaker": 1,
        "demo": {"speakers": 2, "utterances_per_speaker": 4, "seconds": 0.5},
    },
    "model": {
        "encoder": {"channels": 16, "downsample_layers": 3, "residual_layers": 1},
        "quantizer": {"codebook_size": 32, "dim": 8},
        "decoder": {
            "layers": 4,
            "stacks": 1,
            "residual_channels": 8,
            "gate_channels": 16,
            "skip_channels": 16,
            "cond_channels": 8,
            "speaker_dim": 4,
        },
    },
    "train": {
        "steps": 4,
        "batch_size": 4,
        "lr": 0.003,
        "log_every": 1,
        "valid_every": 2,
        "checkpoint_every": 2,
    },
}


def tiny_dict(**sections: dict[str, Any]) -> dict[str, Any]:
    """A copy of the tiny recipe with some sections' keys replaced."""
    data = copy.deepcopy(TINY)
    for section, values in sections.items():
        data[section].update(values)
    return data


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked `cuda` need a CUDA GPU: where there is none they are skipped, with the reason
    (run them on a GPU machine with `pytest -m cuda`; docs/gpu.md)."""
    marked = [item for item in items if item.get_closest_marker("cuda") is not None]
    if not marked:
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU: none here")
    for item in marked:
        item.add_marker(skip)


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("VQAUDIO_CACHE", str(cache))
    return cache


@pytest.fixture
def tiny_recipe_file(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_dict()))
    return path


CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def write_cifar_like(root: Path, train: int = 600, test: int = 100, seed: int = 0) -> Path:
    """A folder in the official `cifar-10-batches-py/` format with generated 32x32 images: each
    class a colour and a stripe frequency, plus noise, so that models have something to learn.
    For tests of image training that need the format, not real photographs."""
    import pickle

    import numpy as np

    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)

    def batch(count: int) -> dict:
        labels = rng.integers(0, 10, count)
        rows = np.arange(32)[None, :, None]
        images = np.empty((count, 3, 32, 32), dtype=np.float64)
        for channel in range(3):
            tint = 60 + 18 * ((labels * (channel + 3)) % 10)
            stripes = 50 * np.sin(rows * (labels[:, None, None] + 1) * 0.3 + channel)
            images[:, channel] = tint[:, None, None] + stripes + rng.normal(0, 20, (count, 32, 32))
        data = np.clip(images, 0, 255).astype(np.uint8).reshape(count, 3072)
        return {b"data": data, b"labels": [int(x) for x in labels], b"filenames": [b"generated.png"] * count}

    for name, count in (("data_batch_1", train // 2), ("data_batch_2", train - train // 2), ("test_batch", test)):
        (root / name).write_bytes(pickle.dumps(batch(count), protocol=2))
    (root / "batches.meta").write_bytes(pickle.dumps({b"label_names": [c.encode() for c in CIFAR_CLASSES]}, protocol=2))
    return root


@pytest.fixture(scope="session")
def cifar_like(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Generated images in CIFAR-10's file format (see `write_cifar_like`)."""
    return write_cifar_like(tmp_path_factory.mktemp("cifar") / "cifar-10-batches-py")


@pytest.fixture
def shared_data() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"real test data not found at {SHARED} (set VQAUDIO_TEST_DATA; CI has ../shared/data)")
    return SHARED


def invoke(*args: str):
    """Run the CLI in-process and insist that it succeeds."""
    from typer.testing import CliRunner

    from vqaudio.cli import app

    result = CliRunner().invoke(app, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def train_in(work: Path, recipe: dict[str, Any], *overrides: str) -> Path:
    """Train `recipe` through the CLI with `work` as the working folder; returns the newest checkpoint."""
    (work / "tiny.yaml").write_text(yaml.safe_dump(recipe))
    old = os.getcwd()
    os.chdir(work)
    try:
        invoke("train", "tiny.yaml", *overrides, "--quiet", "--device", "cpu")
    finally:
        os.chdir(old)
    return sorted((work / "runs" / recipe["name"]).glob("*/checkpoints/step_*.pt"))[-1]


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny 8 kHz model trained through the CLI in its own working folder: (folder, checkpoint)."""
    work = tmp_path_factory.mktemp("cli")
    return work, train_in(work, tiny_dict(data={"sample_rate": 8000}), "train.steps=3")


def run_main(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """Run the real entry point (with its error handling) in-process: (exit code, stdout + stderr)."""
    import sys

    from vqaudio import cli

    old_argv = sys.argv
    sys.argv = ["vqaudio", *args]
    code = 0
    try:
        cli.main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    finally:
        sys.argv = old_argv
    captured = capsys.readouterr()
    return code, captured.out + captured.err
