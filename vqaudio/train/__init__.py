"""Training: one loop for every model, checkpoints and run directories."""
