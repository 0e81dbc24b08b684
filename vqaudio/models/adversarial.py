"""The adversarial part of a conv decoder's training: discriminators and their losses.

`Critic` holds the discriminators and gives two things from a real and a generated waveform:
- the discriminators' loss, computed on the generated waveform detached, so its gradients
  reach only the discriminators;
- the generator's adversarial and feature-matching losses, computed through the discriminators
  with their parameters detached, so their gradients reach only the generator.
The two can therefore be added into one loss and back-propagated once; a training step then
moves each optimiser over its own parameters. `active` turns the critic on (from
`train.adversarial_start`); until then it is not used at all.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from vqaudio.models.discriminators import Judgement

LOSSES = ("lsgan", "hinge")


class Critic(nn.Module):
    def __init__(self, discriminators: nn.Module, loss: str = "lsgan", adversarial_weight: float = 1.0, feature_weight: float = 2.0) -> None:
        super().__init__()
        if loss not in LOSSES:
            raise ValueError(f"unknown adversarial loss {loss!r} ({' or '.join(LOSSES)})")
        self.discriminators = discriminators
        self.loss = loss
        self.adversarial_weight = adversarial_weight
        self.feature_weight = feature_weight
        self.active = False

    def forward(self, audio: torch.Tensor) -> list[Judgement]:
        return self.discriminators(audio)

    def _frozen(self, audio: torch.Tensor) -> list[Judgement]:
        """The discriminators' judgement with their parameters held constant."""
        params = {name: p.detach() for name, p in self.discriminators.named_parameters()}
        return functional_call(self.discriminators, params, (audio,))

    def losses(self, real: torch.Tensor, fake: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(the generator's weighted adversarial terms plus the discriminators' loss, each term to log)."""
        real_judgements = self(real)
        fake_judgements = self(fake.detach())
        disc = sum((self._disc_loss(r, f) for (r, _), (f, _) in zip(real_judgements, fake_judgements)), real.new_zeros(()))
        adversarial = real.new_zeros(())
        features = real.new_zeros(())
        for (_, real_maps), (logits, fake_maps) in zip(real_judgements, self._frozen(fake)):
            adversarial = adversarial + self._gen_loss(logits)
            for r, f in zip(real_maps, fake_maps):
                features = features + F.l1_loss(f, r.detach())
        generator = self.adversarial_weight * adversarial + self.feature_weight * features
        terms = {"adversarial": adversarial.detach(), "feature_matching": features.detach(), "discriminator": disc.detach()}
        return generator + disc, terms

    def _disc_loss(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        if self.loss == "hinge":
            return F.relu(1 - real).mean() + F.relu(1 + fake).mean()
        return (1 - real).pow(2).mean() + fake.pow(2).mean()

    def _gen_loss(self, fake: torch.Tensor) -> torch.Tensor:
        if self.loss == "hinge":
            return -fake.mean()
        return (1 - fake).pow(2).mean()
