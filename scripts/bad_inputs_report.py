"""Feed every broken input in tests/bad_inputs.py to the real command line and print what it says.

    python scripts/bad_inputs_report.py [-c CHECKPOINT]

Each case runs `python -m vqaudio ...` in a fresh temporary folder. The table gives the exit code
and the error line; the last line is JSON with the counts. The checkpoint must be an audio VQ-VAE
at 8 kHz with K = 32 (the tests' tiny model), since the messages quote its sizes; without -c one
is trained first (about 10 s).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from bad_inputs import BAD_INPUTS  # noqa: E402
from conftest import tiny_dict  # noqa: E402


def tiny_checkpoint(folder: Path) -> Path:
    import yaml

    recipe = folder / "tiny.yaml"
    recipe.write_text(yaml.safe_dump(tiny_dict(data={"sample_rate": 8000}, train={"steps": 3, "runs_dir": str(folder / "runs")})))
    subprocess.run([sys.executable, "-m", "vqaudio", "train", str(recipe), "--quiet", "--device", "cpu"], check=True,
                   capture_output=True)  # fmt: skip
    return sorted((folder / "runs").glob("tiny/*/checkpoints/step_*.pt"))[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-c", "--checkpoint", type=Path)
    args = parser.parse_args()
    rows, passed = [], 0
    with tempfile.TemporaryDirectory() as scratch:
        checkpoint = args.checkpoint or tiny_checkpoint(Path(scratch))
        for index, case in enumerate(BAD_INPUTS):
            folder = Path(scratch) / f"case{index}"
            folder.mkdir()
            argv = case.make(folder, checkpoint)
            done = subprocess.run([sys.executable, "-m", "vqaudio", *argv], capture_output=True, text=True, cwd=folder)
            lines = done.stderr.strip().splitlines()
            line = " ".join(lines).replace(str(folder) + "/", "").replace(str(checkpoint), "CKPT")
            leftover = case.output is not None and (folder / case.output).exists()
            ok = done.returncode == 2 and len(lines) == 1 and case.message in lines[0] and not leftover
            passed += ok
            rows.append((case.name, done.returncode, line, ok))
    print("| bad input | exit | message |\n|---|---|---|")
    for name, code, line, ok in rows:
        print(f"| {name} | {code} | `{line}`{'' if ok else ' **(unexpected)**'} |")
    print(json.dumps({"cases": len(rows), "one_line_exit_2": passed}))


if __name__ == "__main__":
    main()
