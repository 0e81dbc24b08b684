"""Training: one loop for every model kind, its optimisation step, RNG, signals, DDP, run folders and logs."""
