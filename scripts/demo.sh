#!/usr/bin/env bash
# Set up if needed, train the demo recipe on the embedded synthetic speech, encode and decode a
# held-out demo utterance, evaluate the held-out clips, draw the run, and say where everything is.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
vq=.venv/bin/vqaudio

$vq train recipes/demo.yaml "$@"
run=$(cd runs/latest && pwd -P)
checkpoint=$(ls "$run"/checkpoints/step_*.pt | tail -n 1)
out="$run/example"
mkdir -p "$out"
$vq demo-clip "$out/original.wav" --speaker 2 --seconds 3 --force
$vq encode "$out/original.wav" "$out/codes.npy" -c "$checkpoint" --speaker demo2 --force
$vq decode "$out/codes.npy" "$out/decoded.wav" -c "$checkpoint" --force
$vq decode "$out/codes.npy" "$out/decoded_as_demo0.wav" -c "$checkpoint" --speaker demo0 --force
$vq eval -c "$checkpoint" --json "$run/eval.json" --force
$vq plot "$run"

cat <<MSG

Demo finished. In $run:
  checkpoints/                 model checkpoints (vqaudio info $checkpoint)
  metrics.jsonl                every logged loss, perplexity and codes-used value
  example/original.wav         a new utterance of demo speaker 2 (not in the training set)
  example/codes.npy(.json)     its codes and sidecar
  example/decoded.wav          decoded from the codes
  example/decoded_as_demo0.wav the same codes decoded as speaker 0 (voice conversion)
  eval.json                    vqaudio eval on the held-out clips (beside Opus and Codec2 if installed)
  plots/                       training curves, spectrograms, codebook usage (vqaudio plot)
MSG
