#!/usr/bin/env bash
# Set up if needed, then run the whole test suite on the CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
CUDA_VISIBLE_DEVICES="" exec .venv/bin/python -m pytest -q "$@"
