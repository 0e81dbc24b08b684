"""The bytes vqaudio reads and writes: codes files and their sidecar, `.vqa` bitstreams,
checkpoints and their typed metadata, PNG grids. Reading, writing and validating, nothing else."""
