"""The audio VQ-VAE: encoder -> vector quantiser -> WaveNet decoder conditioned on the speaker.

With `model.top` in the recipe it has two levels (VQ-VAE-2): coarse top codes at 1/ratio of the
bottom code rate, and bottom codes quantised from the bottom latents plus the top's view of them.
Two-level codes travel as (bottom [B, 1, F], top [B, 1, F / ratio]); `top` is None for one level.
Decoding (sampling the WaveNet) is `vqaudio.generation.decode`'s work; `vqaudio.models.build`
makes this model from a recipe's model section.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vqaudio.audio.mulaw import mulaw_encode, silence_class
from vqaudio.models.encoder import AudioEncoder
from vqaudio.models.modes import evaluating
from vqaudio.models.quantizer import QuantizerOutput, usage_stats
from vqaudio.models.residual_quantizer import ResidualVectorQuantizer
from vqaudio.models.top_level import TopLevel
from vqaudio.models.wavenet import WaveNet


@dataclass
class AudioVQVAEOutput:
    logits: torch.Tensor  # [B, 256, T]
    targets: torch.Tensor  # [B, T] μ-law classes
    quantizer: QuantizerOutput
    top: QuantizerOutput | None = None


class AudioVQVAE(nn.Module):
    """Waveform -> codes at 1/hop of the sample rate -> waveform, as in van den Oord et al. (2017)."""

    def __init__(
        self,
        encoder: AudioEncoder,
        quantizer: ResidualVectorQuantizer,
        top: TopLevel | None,
        speaker_embedding: nn.Embedding | None,
        cond_net: nn.Module,
        decoder: WaveNet,
    ) -> None:
        """`cond_net` turns the code vectors (with a top level: the bottom vectors and the
        expanded top features side by side) into the decoder's local conditioning at the code
        rate; `speaker_embedding` (None: no speaker) feeds its global conditioning."""
        super().__init__()
        if decoder.hop != encoder.hop:
            raise ValueError(f"the decoder reads one conditioning frame per {decoder.hop} samples, the encoder makes one per {encoder.hop}")
        speaker_dim = speaker_embedding.embedding_dim if speaker_embedding is not None else 0
        if decoder.global_channels != speaker_dim:
            raise ValueError(f"the decoder takes {decoder.global_channels} speaker channels, not {speaker_dim}")
        self.encoder = encoder
        self.quantizer = quantizer
        self.top = top
        self.hop = encoder.hop
        self.num_speakers = speaker_embedding.num_embeddings if speaker_embedding is not None else 1
        self.mu_channels = decoder.num_classes
        self.silence = silence_class(self.mu_channels)  # the "previous sample" before the first
        self.speaker_embedding = speaker_embedding
        self.cond_net = cond_net
        self.cond_context = 1  # frames on each side that one conditioning frame depends on (a kernel-3 convolution)
        self.decoder = decoder

    @property
    def codebook_size(self) -> int:
        return self.quantizer.codebook_size

    @property
    def n_q(self) -> int:
        return self.quantizer.n_q

    @property
    def ratio(self) -> int:
        """Bottom code frames per top code frame (1 for a one-level model)."""
        return self.top.ratio if self.top is not None else 1

    @property
    def top_codebook_size(self) -> int | None:
        return self.top.quantizer.codebook_size if self.top is not None else None

    @property
    def top_hop(self) -> int:
        """Samples per coarsest code frame: the hop times the ratio (the hop for one level).
        Encoding pads the audio to a whole number of these."""
        return self.hop * self.ratio

    def frames_for(self, num_samples: int) -> int:
        """Bottom code frames that cover `num_samples` samples."""
        return max(1, -(-num_samples // self.top_hop)) * self.ratio

    @property
    def context_frames(self) -> int:
        """Bottom frames on each side that one frame's codes can depend on (a safe upper bound)."""
        own = self.encoder.context_frames
        return own + (self.top.context_frames + own + self.top.expand_context if self.top is not None else 0)

    def speaker_vector(self, speaker: torch.Tensor) -> torch.Tensor | None:
        if self.speaker_embedding is None:
            return None
        if not torch.compiler.is_compiling() and (speaker.min() < 0 or speaker.max() >= self.num_speakers):
            raise ValueError(f"speaker index out of range 0..{self.num_speakers - 1}")
        return self.speaker_embedding(speaker)

    def forward(self, audio: torch.Tensor, speaker: torch.Tensor, n_q: int | None = None) -> AudioVQVAEOutput:
        """Teacher-forced pass: audio [B, T] float in [-1, 1], speaker [B] -> logits for every sample
        (decoded from the first `n_q` codebooks; all by default)."""
        quant, top, features = self._quantise(audio, n_q)
        targets = mulaw_encode(audio, self.mu_channels)
        inputs = F.pad(targets[:, :-1], (1, 0), value=self.silence)
        logits = self.decoder(inputs, self.cond_net(features), self.speaker_vector(speaker))
        return AudioVQVAEOutput(logits, targets, quant, top)

    def _quantise(
        self, audio: torch.Tensor, n_q: int | None = None
    ) -> tuple[QuantizerOutput, QuantizerOutput | None, torch.Tensor]:
        """(bottom quantisation, top quantisation or None, the decoder's input features at the code rate)."""
        z_e = self.encoder(audio.unsqueeze(1))
        if self.top is None:
            quant = self.quantizer(z_e, n_q=n_q)
            return quant, None, quant.quantized
        top = self.top.quantizer(self.top.encoder(z_e))
        expanded = self.top.expand(top.quantized)
        quant = self.quantizer(z_e + self.top.to_bottom(expanded), n_q=n_q)
        return quant, top, torch.cat([quant.quantized, expanded], dim=1)

    def check_top(self, top: torch.Tensor | None, frames: int) -> None:
        if (top is None) != (self.top is None):
            raise ValueError("top codes must be given exactly when the model has a top level")
        if top is not None and top.shape[-1] * self.ratio != frames:
            raise ValueError(f"{top.shape[-1]} top frames x ratio {self.ratio} != {frames} bottom frames")

    def training_step(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Loss = -log p(x | z_q) + quantiser terms; returns the loss and the values to log."""
        out = self(batch["audio"], batch["speaker"])
        nll = F.cross_entropy(out.logits.float(), out.targets)
        q = out.quantizer
        loss = nll + q.loss
        metrics: dict[str, torch.Tensor] = {
            "loss": loss.detach(),
            "nll": nll.detach(),
            "commitment": q.commitment_loss,
            "codebook": q.codebook_loss,
            "restarts": q.restarts,
            "code_counts": q.counts,  # [n_q, K], summed over batches by the training loop
        }
        if out.top is not None:
            loss = loss + out.top.loss
            metrics.update(
                loss=loss.detach(),
                commitment=q.commitment_loss + out.top.commitment_loss,
                codebook=q.codebook_loss + out.top.codebook_loss,
                restarts=q.restarts + out.top.restarts,
                top_code_counts=out.top.counts,
            )
        return loss, metrics

    @staticmethod
    def summarize_metrics(values: dict[str, torch.Tensor | float]) -> dict[str, float]:
        """Turn summed code histograms into usage figures: codes used (of K), perplexity and
        entropy in bits of the first codebook, and codes used by each further codebook."""
        result = {k: float(v) for k, v in values.items() if k not in ("code_counts", "top_code_counts")}
        counts = values.get("code_counts")
        if counts is not None:
            counts = torch.as_tensor(counts)
            result.update(usage_stats(counts[0]))
            for level in range(1, counts.shape[0]):
                result[f"codes_used_q{level}"] = float((counts[level] > 0).sum())
        top_counts = values.get("top_code_counts")
        if top_counts is not None:
            result.update({f"top_{k}": v for k, v in usage_stats(torch.as_tensor(top_counts)[0]).items()})
        return result

    def encode(self, audio: torch.Tensor, n_q: int | None = None) -> torch.Tensor:
        """Audio [B, T] (T a multiple of the hop) -> codes [B, n_q, T / hop] (a two-level model's bottom codes)."""
        return self.encode_levels(audio, n_q)[0]

    def encode_levels(self, audio: torch.Tensor, n_q: int | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Audio [B, T] (T a multiple of hop x ratio) -> (bottom codes [B, n_q, T / hop],
        top codes [B, 1, T / (hop x ratio)] or None for a one-level model). Changes nothing in
        the model, whatever its mode (see `evaluating`)."""
        with evaluating(self):
            quant, top, _ = self._quantise(audio, n_q)
        return quant.codes, (top.codes if top is not None else None)

    def latent_conditioning(self, codes: torch.Tensor, first: int, last: int, top: torch.Tensor | None = None) -> torch.Tensor:
        """The decoder's local conditioning for frames [first, last) of `codes` [B, n, frames]
        (and of the `top` codes [B, 1, frames / ratio] of a two-level model).

        Computed from the codes of those frames plus the conditioning network's context on each
        side, so that decoding block by block gives exactly what the whole sequence would.
        """
        ctx = self.cond_context
        lo, hi = max(0, first - ctx), min(codes.shape[-1], last + ctx)
        vectors = self.quantizer.lookup(codes[..., lo:hi])
        if self.top is not None:
            assert top is not None
            vectors = torch.cat([vectors, self.top.expand_codes(top, lo, hi)], dim=1)
        features = self.cond_net(vectors)
        return features[:, :, first - lo : first - lo + (last - first)]
