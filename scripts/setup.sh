#!/usr/bin/env bash
# Idempotent set-up: creates .venv if missing and installs vqaudio (editable) with the test tools,
# the evaluation metrics (pesq, pystoi), TensorBoard and the ONNX exporter (onnx, onnxruntime).
# Re-runs pip only when pyproject.toml changed since the last install. Uses pip, not uv: pip finds
# the torch wheels kept on local disk, uv would download several GB.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "error: vqaudio needs Python 3.11 or newer; set PYTHON=/path/to/python3.11" >&2
    exit 2
  fi
  "$PYTHON" -m venv .venv
fi

stamp=.venv/.vqaudio-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "installing vqaudio into .venv (the first time takes a few minutes: torch is large)" >&2
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[dev,eval,tensorboard,export]'
  echo "$want" > "$stamp"
fi
