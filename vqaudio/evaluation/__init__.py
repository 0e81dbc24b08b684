"""`vqaudio eval` and `vqaudio plot`: metrics, alignment, clip selection, classical baselines, reports and figures."""
