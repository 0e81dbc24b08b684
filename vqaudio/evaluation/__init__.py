"""Measuring a trained codec: metrics, alignment, clip selection, classical baselines, the report."""
