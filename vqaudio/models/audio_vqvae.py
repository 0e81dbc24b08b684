"""The audio VQ-VAE: encoder -> vector quantiser -> decoder conditioned on the speaker.

The decoder is a WaveNet (`model.decoder.kind: wavenet`: μ-law classes, sampled one at a time)
or a feed-forward convolutional decoder (`conv`: the waveform in one pass, trained on spectral
losses and, optionally, against discriminators passed to `training_step` as a `Critic`).

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

from vqaudio.audio.emphasis import pre_emphasis
from vqaudio.audio.mulaw import mulaw_decode, mulaw_encode, silence_class
from vqaudio.models import mixture
from vqaudio.models.adversarial import Critic
from vqaudio.models.conv_decoder import ConvDecoder
from vqaudio.models.encoder import AudioEncoder
from vqaudio.models.modes import evaluating
from vqaudio.models.quantizer import QuantizerOutput, usage_stats
from vqaudio.models.residual_quantizer import ResidualVectorQuantizer
from vqaudio.models.spectral_loss import SpectralLoss
from vqaudio.models.top_level import TopLevel
from vqaudio.models.wavenet import WaveNet


@dataclass
class AudioVQVAEOutput:
    quantizer: QuantizerOutput
    top: QuantizerOutput | None = None
    logits: torch.Tensor | None = None  # WaveNet: [B, 256, T]
    targets: torch.Tensor | None = None  # WaveNet: [B, T] μ-law classes
    audio: torch.Tensor | None = None  # conv: the decoded waveform [B, T]


class AudioVQVAE(nn.Module):
    """Waveform -> codes at 1/hop of the sample rate -> waveform, as in van den Oord et al. (2017)."""

    def __init__(
        self,
        encoder: AudioEncoder,
        quantizer: ResidualVectorQuantizer,
        top: TopLevel | None,
        speaker_embedding: nn.Embedding | None,
        cond_net: nn.Module,
        decoder: WaveNet | ConvDecoder,
        spectral_loss: SpectralLoss | None = None,
        pre_emphasis: float = 0.0,
    ) -> None:
        """`cond_net` turns the code vectors (with a top level: the bottom vectors and the
        expanded top features side by side) into the decoder's local conditioning at the code
        rate; `speaker_embedding` (None: no speaker) feeds its global conditioning.
        `spectral_loss` is what a conv decoder trains on (a WaveNet trains on its likelihood);
        it holds no weights, so models built for inference go without it. With `pre_emphasis` a,
        a WaveNet models y[n] = x[n] - a x[n-1] and its output is de-emphasised after sampling."""
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
        self.speaker_embedding = speaker_embedding
        self.cond_net = cond_net
        self.decoder = decoder
        self.waveform_decoder = isinstance(decoder, ConvDecoder)
        if pre_emphasis and self.waveform_decoder:
            raise ValueError("pre-emphasis is for a WaveNet decoder's μ-law samples, not a conv decoder")
        self.pre_emphasis = pre_emphasis
        if self.waveform_decoder:
            self.mu_channels = 0
            self.silence = 0
            self.cond_context = 0  # the conv decoder reads the code vectors themselves
            self.decoder_context = decoder.context_frames
            self.spectral_loss = spectral_loss
        elif decoder.mixtures:
            self.mu_channels = 0  # 16-bit samples, not μ-law classes
            self.silence = mixture.SILENCE
            self.cond_context = 1
            self.decoder_context = 0
        else:
            self.mu_channels = decoder.num_classes
            self.silence = silence_class(self.mu_channels)  # the "previous sample" before the first
            self.cond_context = 1  # frames on each side that one conditioning frame depends on (a kernel-3 convolution)
            self.decoder_context = 0

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
        speaker_vector = self.speaker_vector(speaker)
        if self.waveform_decoder:
            return AudioVQVAEOutput(quant, top, audio=self.decoder(self.cond_net(features), speaker_vector))
        targets = self.sample_classes(pre_emphasis(audio, self.pre_emphasis))
        inputs = F.pad(targets[:, :-1], (1, 0), value=self.silence)
        logits = self.decoder(inputs, self.cond_net(features), speaker_vector)
        return AudioVQVAEOutput(quant, top, logits=logits, targets=targets)

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

    def sample_classes(self, audio: torch.Tensor) -> torch.Tensor:
        """Waveform values -> the WaveNet's sample classes (μ-law, or 16-bit for a mixture output)."""
        if self.decoder.mixtures:
            return mixture.value_to_class(audio)
        return mulaw_encode(audio, self.mu_channels)

    def sample_values(self, classes: torch.Tensor) -> torch.Tensor:
        """The WaveNet's sample classes -> waveform values in [-1, 1]."""
        if self.decoder.mixtures:
            return mixture.class_to_value(classes)
        return mulaw_decode(classes, self.mu_channels)

    def sample_nll(self, out: AudioVQVAEOutput) -> torch.Tensor:
        """-log p(x_t | x_<t, z_q) in nats for every sample [B, T], teacher-forced (a WaveNet's)."""
        assert out.logits is not None and out.targets is not None
        if self.decoder.mixtures:
            return -mixture.log_prob(out.logits.float(), out.targets)
        return F.cross_entropy(out.logits.float(), out.targets, reduction="none")

    def check_top(self, top: torch.Tensor | None, frames: int) -> None:
        if (top is None) != (self.top is None):
            raise ValueError("top codes must be given exactly when the model has a top level")
        if top is not None and top.shape[-1] * self.ratio != frames:
            raise ValueError(f"{top.shape[-1]} top frames x ratio {self.ratio} != {frames} bottom frames")

    def training_step(self, batch: dict[str, torch.Tensor], critic: Critic | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Loss = the decoder's reconstruction loss + quantiser terms; returns the loss and the
        values to log. The reconstruction loss is -log p(x | z_q) for a WaveNet, and the spectral
        losses for a conv decoder, plus, when an active `critic` is given, the adversarial terms
        (the logged `loss` is the generator's; the discriminators' is logged apart)."""
        out = self(batch["audio"], batch["speaker"])
        q = out.quantizer
        extra: dict[str, torch.Tensor] = {}
        critic_loss = None
        if self.waveform_decoder:
            if self.spectral_loss is None:
                raise RuntimeError("a conv-decoder model needs its spectral loss to train (see vqaudio.tasks.audio_vqvae)")
            assert out.audio is not None
            reconstruction, extra = self.spectral_loss(out.audio, batch["audio"])
            if critic is not None and critic.active:
                critic_loss, terms = critic.losses(batch["audio"], out.audio)
                extra.update(terms)
        else:
            assert out.logits is not None and out.targets is not None
            if self.decoder.mixtures:
                reconstruction = -mixture.log_prob(out.logits.float(), out.targets).mean()
            else:
                reconstruction = F.cross_entropy(out.logits.float(), out.targets)
            extra = {"nll": reconstruction.detach()}
        loss = reconstruction + q.loss
        metrics: dict[str, torch.Tensor] = {
            "loss": loss.detach(),
            **extra,
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
        if critic_loss is not None:  # the generator's adversarial terms plus the discriminators' own loss
            metrics["loss"] = (loss + critic_loss - extra["discriminator"]).detach()
            loss = loss + critic_loss
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

    def decode_frames(
        self, codes: torch.Tensor, first: int, last: int, speaker_vector: torch.Tensor | None, top: torch.Tensor | None = None
    ) -> torch.Tensor:
        """A conv decoder's audio [B, (last - first) x hop] for frames [first, last) of `codes`,
        computed from those frames plus the decoder's context on each side, so that decoding
        block by block gives what the whole sequence gives in one pass."""
        assert self.waveform_decoder, "only a conv decoder decodes in one pass"
        ctx = self.decoder_context
        lo, hi = max(0, first - ctx), min(codes.shape[-1], last + ctx)
        features = self.latent_conditioning(codes, lo, hi, top)
        audio = self.decoder(features, speaker_vector)
        return audio[:, (first - lo) * self.hop : (last - lo) * self.hop]
