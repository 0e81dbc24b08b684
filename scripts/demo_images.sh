#!/usr/bin/env bash
# The image path on the shared CIFAR-10 sample (../shared/data/cifar-10-batches-py-mini), CPU-sized:
# train the VQ-VAE and the VAE baseline for the same number of steps, fit the PixelCNN prior,
# compare bits/dim, and draw samples. About an hour on 2 CPU cores.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
vq=.venv/bin/vqaudio

newest() { ls -d runs/"$1"/*/ | tail -n 1; }
last_checkpoint() { ls "$1"checkpoints/step_*.pt | tail -n 1; }

$vq train recipes/cifar10_cpu.yaml "$@"
$vq train recipes/cifar10_vae_cpu.yaml "$@"
vq_run=$(newest cifar10_cpu)
$vq train recipes/cifar10_prior_cpu.yaml "prior.vqvae=$vq_run" "$@"
prior_run=$(newest cifar10_prior_cpu)

$vq eval -c "$(last_checkpoint "$vq_run")" --json "$vq_run/eval.json" --force
$vq eval -c "$(last_checkpoint "$(newest cifar10_vae_cpu)")" --json "$(newest cifar10_vae_cpu)/eval.json" --force
$vq eval -c "$(last_checkpoint "$prior_run")" --json "$prior_run/eval.json" --force
$vq sample --label cat -n 64 -c "$(last_checkpoint "$prior_run")" -o "$prior_run/samples_cat.png" --force

echo
echo "bits/dim in $vq_run/eval.json, $(newest cifar10_vae_cpu)eval.json and $prior_run/eval.json;"
echo "reconstructions in each run's eval_reconstructions.png; samples in $prior_run/samples_cat.png"
