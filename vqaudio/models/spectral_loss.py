"""Reconstruction losses on spectra, for decoders that output the waveform in one pass.

- Multi-resolution STFT loss (spectral convergence plus log magnitude at three resolutions,
  Yamamoto et al. 2020), from auraloss.
- Multi-scale mel L1 (DAC): at each window length, L1 between the log mel spectra plus L1
  between the mel magnitudes, summed over the scales. The mel filters are librosa's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def mel_bands(window: int) -> int:
    """Mel bands for a window length: one per eight bins, at most 80, so that no band is empty."""
    return max(4, min(80, window // 8))


class MultiScaleMelLoss(nn.Module):
    def __init__(self, sample_rate: int, windows: list[int], clamp: float = 1e-5) -> None:
        super().__init__()
        import librosa  # the field's mel filters (Slaney scale and normalisation)

        self.windows = list(windows)
        self.clamp = clamp
        for window in self.windows:
            filters = librosa.filters.mel(sr=sample_rate, n_fft=window, n_mels=mel_bands(window))
            self.register_buffer(f"filters_{window}", torch.from_numpy(filters).float(), persistent=False)
            self.register_buffer(f"window_{window}", torch.hann_window(window), persistent=False)

    def mel(self, audio: torch.Tensor, window: int) -> torch.Tensor:
        spec = torch.stft(audio.float(), window, window // 4, window=getattr(self, f"window_{window}"), return_complex=True)
        return getattr(self, f"filters_{window}") @ spec.abs()

    def forward(self, estimate: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """Both [B, T]."""
        total = estimate.new_zeros((), dtype=torch.float32)
        for window in self.windows:
            fake, real = self.mel(estimate, window), self.mel(reference, window)
            total = total + F.l1_loss(fake.clamp(min=self.clamp).log10(), real.clamp(min=self.clamp).log10())
            total = total + F.l1_loss(fake, real)
        return total


class SpectralLoss(nn.Module):
    """The weighted sum of the two spectral losses; returns the total and each term."""

    def __init__(self, sample_rate: int, mel_weight: float, stft_weight: float, mel_windows: list[int], stft_ffts: list[int]) -> None:
        super().__init__()
        from auraloss.freq import MultiResolutionSTFTLoss

        self.mel_weight = mel_weight
        self.stft_weight = stft_weight
        self.mel = MultiScaleMelLoss(sample_rate, mel_windows)
        # Parallel WaveGAN's proportions (FFT 1024, window 600, hop 120), at each FFT size.
        windows = [round(0.6 * n) for n in stft_ffts]
        self.stft = MultiResolutionSTFTLoss(fft_sizes=list(stft_ffts), win_lengths=windows, hop_sizes=[w // 5 for w in windows])

    def forward(self, estimate: torch.Tensor, reference: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        mel = self.mel(estimate, reference)
        stft = self.stft(estimate.float().unsqueeze(1), reference.float().unsqueeze(1))
        total = self.mel_weight * mel + self.stft_weight * stft
        return total, {"mel": mel.detach(), "stft": stft.detach()}
