"""vqaudio: neural audio codec experiments built on the VQ-VAE."""

__version__ = "0.1.0"
