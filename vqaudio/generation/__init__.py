"""Autoregressive generation: one engine for every WaveNet (decoder and prior), three back ends."""
