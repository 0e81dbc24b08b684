"""The package's layers (docs/architecture.md) hold: import-linter's contract, checked on the code."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _contract() -> dict:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    (contract,) = config["contracts"]
    return contract


def test_every_top_level_module_is_in_a_layer():
    named = {name.strip() for layer in _contract()["layers"] for name in layer.split("|")}
    present = {f"vqaudio.{p.stem}" for p in (ROOT / "vqaudio").glob("*.py") if p.stem != "__init__"}
    present |= {f"vqaudio.{p.name}" for p in (ROOT / "vqaudio").iterdir() if (p / "__init__.py").is_file()}
    assert present - named == set(), "a module outside every layer escapes the contract"
    assert named - present == set(), "the contract names a module that no longer exists"


def test_the_layer_contract_is_kept():
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    if lint is None:
        pytest.skip("import-linter is not installed (pip install -e '.[dev]')")
    result = subprocess.run([lint, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "1 kept, 0 broken" in result.stdout
