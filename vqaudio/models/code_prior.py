"""The learned prior over VQ-VAE codes: a WaveNet over the code sequence, conditioned on the speaker.

Codes [n_q, T] are read as one token sequence, step by step and level by level
(t0 l0, t0 l1, ..., t1 l0, ...), each token tagged with its level (token = level * K + code), so
one WaveNet handles any number of residual codebooks: every code is predicted from all earlier
steps and from the coarser levels of its own step. Its distribution is a softmax over the K codes of
that level only. A separate start token precedes the sequence. Bits per code is the mean negative
log2-likelihood of the codes.

Over a two-level VQ-VAE there are two priors: the top one over the top codes (this class as it
is), and the bottom one conditioned on the top codes (`condition_codes`, `condition_ratio`): the
top codes pass through an embedding and a non-causal residual stack (they are all known before
the bottom is drawn) and condition every WaveNet layer at the top code rate.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from vqaudio.models.encoder import DilatedResidual
from vqaudio.models.pruning import PruningSchedule
from vqaudio.models.wavenet import WaveNet

IGNORE = -1  # padding in code batches: excluded from the loss


class CodePrior(nn.Module):
    def __init__(
        self,
        codebook_size: int,
        n_q: int,
        num_speakers: int,
        layers: int = 20,
        stacks: int = 2,
        kernel_size: int = 2,
        residual_channels: int = 64,
        gate_channels: int = 128,
        skip_channels: int = 128,
        speaker_dim: int = 16,
        condition_codes: int = 0,
        condition_ratio: int = 1,
        condition_blocks: int = 4,
        pruning: PruningSchedule | None = None,
    ) -> None:
        super().__init__()
        self.codebook_size = codebook_size
        self.n_q = n_q
        self.start_token = n_q * codebook_size
        self.speaker = nn.Embedding(num_speakers, speaker_dim) if speaker_dim else None
        self.condition_ratio = condition_ratio
        self.condition: nn.Module | None = None
        if condition_codes:
            self.condition_embedding = nn.Embedding(condition_codes, residual_channels)
            self.condition = nn.Sequential(
                nn.Conv1d(residual_channels, residual_channels, 3, padding=1),
                *[DilatedResidual(residual_channels, 2**i) for i in range(condition_blocks)],
                nn.ReLU(),
            )
        self.wavenet = WaveNet(
            num_classes=n_q * codebook_size + 1,
            residual_channels=residual_channels,
            gate_channels=gate_channels,
            skip_channels=skip_channels,
            layers=layers,
            stacks=stacks,
            kernel_size=kernel_size,
            global_channels=speaker_dim,
            cond_channels=residual_channels if condition_codes else 0,
            hop=condition_ratio * n_q,  # one top frame covers `ratio` frames of n_q tokens
            pruning=pruning,
        )
        self.mask_start_logit()

    @torch.no_grad()
    def mask_start_logit(self) -> None:
        """Make the start token's output logit -1e4 whatever the input.

        No loss ever reads that logit (each code's softmax covers only its level's K codes), so
        this changes no probability; it lets the generation engine sample one-codebook priors over
        all classes (fused CPU kernel, CUDA graphs) without ever drawing the start token."""
        last = self.wavenet.head[-1]
        last.weight[self.start_token].zero_()
        last.bias[self.start_token] = -1e4

    # ----- token layout -----

    def tokens(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes [B, n_q, T] -> level-tagged tokens [B, T * n_q] (IGNORE stays IGNORE)."""
        offsets = torch.arange(self.n_q, device=codes.device)[None, :, None] * self.codebook_size
        tagged = torch.where(codes >= 0, codes + offsets, codes)
        return tagged.transpose(1, 2).reshape(codes.shape[0], -1)

    def level_logits(self, logits: torch.Tensor, first_position: int = 0) -> torch.Tensor:
        """Full logits [B, L, classes] -> each position's own level's K logits [B, L, K]."""
        length = logits.shape[1]
        levels = (torch.arange(length, device=logits.device) + first_position) % self.n_q
        index = levels[:, None] * self.codebook_size + torch.arange(self.codebook_size, device=logits.device)
        return logits.gather(2, index[None].expand(logits.shape[0], -1, -1))

    def global_features(self, speaker: torch.Tensor) -> torch.Tensor | None:
        return self.speaker(speaker) if self.speaker is not None else None

    def condition_features(self, top: torch.Tensor | None) -> torch.Tensor | None:
        """Top codes [B, 1, F_top] (IGNORE past an utterance's end) -> conditioning [B, C, F_top],
        or None for an unconditioned prior. Padding embeds as zeros, like the end of a sequence."""
        if (top is None) != (self.condition is None):
            raise ValueError("top codes must be given exactly when the prior is conditioned on them")
        if top is None or self.condition is None:
            return None
        embedded = self.condition_embedding(top[:, 0].clamp_min(0)) * (top[:, 0] >= 0)[..., None]
        return self.condition(embedded.transpose(1, 2))

    # ----- teacher-forced pass -----

    def log_probs(self, codes: torch.Tensor, speaker: torch.Tensor, top: torch.Tensor | None = None) -> torch.Tensor:
        """log p(code | everything before it [, the top codes]) for every code: [B, T * n_q, K] in token order."""
        tokens = self.tokens(codes)
        start = torch.full_like(tokens[:, :1], self.start_token)
        inputs = torch.cat([start, tokens[:, :-1]], dim=1).clamp_min(0)  # padding only ever follows the end
        logits = self.wavenet(inputs, self.condition_features(top), self.global_features(speaker)).transpose(1, 2)
        return F.log_softmax(self.level_logits(logits).float(), dim=-1)

    def nll_nats(
        self, codes: torch.Tensor, speaker: torch.Tensor, top: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(summed negative log-likelihood in nats, number of codes counted) over non-padding codes."""
        log_probs = self.log_probs(codes, speaker, top)
        targets = codes.transpose(1, 2).reshape(codes.shape[0], -1)
        mask = targets >= 0
        picked = log_probs.gather(2, targets.clamp_min(0)[..., None])[..., 0]
        return -(picked * mask).sum(), mask.sum()

    def training_step(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        total, count = self.nll_nats(batch["codes"], batch["speaker"], batch.get("top"))
        loss = total / count.clamp_min(1)
        # Summed nats and counts (1-element vectors add up over batches in the training loop), so
        # that bits per code is exact over a whole validation pass, not a mean of batch means.
        return loss, {"loss": loss.detach(), "nats": total.detach().reshape(1), "codes": count.reshape(1).float()}

    @staticmethod
    def summarize_metrics(values: dict[str, torch.Tensor | float]) -> dict[str, float]:
        """Bits per code from the summed nats and code counts."""
        result = {k: float(v) for k, v in values.items() if k not in ("nats", "codes")}
        if "nats" in values:
            nats, codes = float(torch.as_tensor(values["nats"]).sum()), float(torch.as_tensor(values["codes"]).sum())
            result["bits_per_code"] = nats / max(codes, 1.0) / math.log(2)
        return result
