"""The audio VQ-VAE: encoder -> vector quantiser -> WaveNet decoder conditioned on the speaker."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vqaudio.audio.mulaw import mulaw_decode, mulaw_encode, silence_class
from vqaudio.generation.engine import Backend, iter_generate
from vqaudio.models.encoder import AudioEncoder
from vqaudio.models.quantizer import QuantizerOutput, usage_stats
from vqaudio.models.residual_quantizer import ResidualVectorQuantizer
from vqaudio.models.wavenet import WaveNet
from vqaudio.recipe import ModelConfig


@dataclass
class AudioVQVAEOutput:
    logits: torch.Tensor  # [B, 256, T]
    targets: torch.Tensor  # [B, T] μ-law classes
    quantizer: QuantizerOutput


class AudioVQVAE(nn.Module):
    """Waveform -> codes at 1/hop of the sample rate -> waveform, as in van den Oord et al. (2017)."""

    def __init__(self, config: ModelConfig, num_speakers: int) -> None:
        super().__init__()
        enc, vq, dec = config.encoder, config.quantizer, config.decoder
        self.encoder = AudioEncoder(enc.channels, vq.dim, enc.downsample_layers, enc.kernel_size, enc.residual_layers)
        self.quantizer = ResidualVectorQuantizer(
            n_q=vq.n_q,
            dropout=vq.dropout,
            num_codes=vq.codebook_size,
            dim=vq.dim,
            beta=vq.beta,
            update=vq.update,
            decay=vq.decay,
            epsilon=vq.epsilon,
            init=vq.init,
            init_batches=vq.init_batches,
            kmeans_iters=vq.kmeans_iters,
            restart_threshold=vq.restart_threshold,
            usage_decay=vq.usage_decay,
            bias_correction=vq.bias_correction,
            cosine=vq.cosine,
        )
        self.hop = self.encoder.hop
        self.num_speakers = num_speakers
        self.mu_channels = dec.quantization_channels
        self.silence = silence_class(self.mu_channels)  # the "previous sample" before the first
        self.speaker_embedding = nn.Embedding(num_speakers, dec.speaker_dim) if dec.speaker_dim else None
        # A kernel-3 convolution at the latent rate lets each frame see its neighbours before upsampling.
        self.cond_net = nn.Sequential(nn.Conv1d(vq.dim, dec.cond_channels, 3, padding=1), nn.ReLU())
        self.cond_context = 1  # frames on each side that one conditioning frame depends on
        self.decoder = WaveNet(
            num_classes=dec.quantization_channels,
            residual_channels=dec.residual_channels,
            gate_channels=dec.gate_channels,
            skip_channels=dec.skip_channels,
            layers=dec.layers,
            stacks=dec.stacks,
            kernel_size=dec.kernel_size,
            cond_channels=dec.cond_channels,
            global_channels=dec.speaker_dim,
            cond_hop=self.hop,
        )

    @property
    def codebook_size(self) -> int:
        return self.quantizer.num_codes

    @property
    def n_q(self) -> int:
        return self.quantizer.n_q

    def _speaker_vector(self, speaker: torch.Tensor) -> torch.Tensor | None:
        if self.speaker_embedding is None:
            return None
        if not torch.compiler.is_compiling() and (speaker.min() < 0 or speaker.max() >= self.num_speakers):
            raise ValueError(f"speaker index out of range 0..{self.num_speakers - 1}")
        return self.speaker_embedding(speaker)

    def forward(self, audio: torch.Tensor, speaker: torch.Tensor) -> AudioVQVAEOutput:
        """Teacher-forced pass: audio [B, T] float in [-1, 1], speaker [B] -> logits for every sample."""
        z_e = self.encoder(audio.unsqueeze(1))
        quant = self.quantizer(z_e)
        targets = mulaw_encode(audio, self.mu_channels)
        inputs = F.pad(targets[:, :-1], (1, 0), value=self.silence)
        logits = self.decoder(inputs, self.cond_net(quant.quantized), self._speaker_vector(speaker))
        return AudioVQVAEOutput(logits, targets, quant)

    def training_step(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Loss = -log p(x | z_q) + quantiser terms; returns the loss and the values to log."""
        out = self(batch["audio"], batch["speaker"])
        nll = F.cross_entropy(out.logits.float(), out.targets)
        q = out.quantizer
        loss = nll + q.loss
        metrics = {
            "loss": loss.detach(),
            "nll": nll.detach(),
            "commitment": q.commitment_loss,
            "codebook": q.codebook_loss,
            "restarts": q.restarts,
            "code_counts": q.counts,  # [n_q, K], summed over batches by the training loop
        }
        return loss, metrics

    @staticmethod
    def summarize_metrics(values: dict[str, torch.Tensor | float]) -> dict[str, float]:
        """Turn summed code histograms into usage figures: codes used (of K), perplexity and
        entropy in bits of the first codebook, and codes used by each further codebook."""
        result = {k: float(v) for k, v in values.items() if k != "code_counts"}
        counts = values.get("code_counts")
        if counts is not None:
            counts = torch.as_tensor(counts)
            result.update(usage_stats(counts[0]))
            for level in range(1, counts.shape[0]):
                result[f"codes_used_q{level}"] = float((counts[level] > 0).sum())
        return result

    @torch.no_grad()
    def encode(self, audio: torch.Tensor, n_q: int | None = None) -> torch.Tensor:
        """Audio [B, T] (T a multiple of the hop) -> codes [B, n_q, T / hop]."""
        return self.quantizer(self.encoder(audio.unsqueeze(1)), n_q=n_q).codes

    def latent_conditioning(self, codes: torch.Tensor, first: int, last: int) -> torch.Tensor:
        """The decoder's local conditioning for frames [first, last) of `codes` [B, n, frames].

        Computed from the codes of those frames plus the conditioning network's context on each
        side, so that decoding block by block gives exactly what the whole sequence would.
        """
        ctx = self.cond_context
        lo, hi = max(0, first - ctx), min(codes.shape[-1], last + ctx)
        features = self.cond_net(self.quantizer.lookup(codes[..., lo:hi]))
        return features[:, :, first - lo : first - lo + (last - first)]

    def iter_decode(
        self,
        codes: torch.Tensor,
        speaker: torch.Tensor,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
        backend: Backend = "auto",
    ) -> Iterator[torch.Tensor]:
        """Codes [B, n, frames] (the first n codebooks) -> successive blocks of audio [B, samples]
        (float in [-1, 1], on the CPU).

        Memory stays bounded whatever the length: conditioning is computed per block."""
        blocks = iter_generate(
            self.decoder,
            codes.shape[-1] * self.hop,
            batch=codes.shape[0],
            cond=lambda first, last: self.latent_conditioning(codes, first, last),
            global_cond=self._speaker_vector(speaker),
            first_input=self.silence,
            temperature=temperature,
            generator=generator,
            backend=backend,
        )
        for block in blocks:
            yield mulaw_decode(block.classes, self.mu_channels)

    @torch.inference_mode()
    def decode(
        self,
        codes: torch.Tensor,
        speaker: torch.Tensor,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
        on_progress: Callable[[int], None] | None = None,
        backend: Backend = "auto",
    ) -> torch.Tensor:
        """Codes [B, n, frames] -> audio [B, frames * hop] by sampling the WaveNet one sample at a time."""
        pieces = []
        done = 0
        for audio in self.iter_decode(codes, speaker, temperature, generator, backend):
            pieces.append(audio)
            done += audio.shape[1]
            if on_progress is not None:
                on_progress(done)
        return torch.cat(pieces, dim=1)
