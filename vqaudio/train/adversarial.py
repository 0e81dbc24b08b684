"""The optimisation step of adversarial training: a generator and discriminators, each with its
own Adam optimiser and schedule.

The model's training step returns one loss that adds the generator's terms (computed through the
discriminators with their parameters held constant) and the discriminators' loss (computed on
the generated audio detached), so one backward pass gives each side exactly its own gradients.
Both sides then step together. Until `train.adversarial_start` the critic is off: the generator
trains on its spectral losses alone and the discriminators do not move.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from vqaudio.models.adversarial import Critic
from vqaudio.recipe import TrainConfig
from vqaudio.train.setup import Metrics, MicroBatches, accumulate, lr_factor


class AdversarialStep:
    def __init__(self, model: nn.Module, critic: Critic, config: TrainConfig) -> None:
        self.model = model
        self.critic = critic
        self.config = config
        self.start = config.adversarial_start
        betas = tuple(config.discriminator.betas)
        self.optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=config.lr, betas=betas)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_factor(config))
        self.critic_lr = config.discriminator.lr or config.lr
        self.factor = lr_factor(config)  # the discriminators follow the same schedule, set each step
        self.critic_optimizer = torch.optim.Adam(critic.parameters(), lr=self.critic_lr, betas=betas)

    def active_at(self, step: int) -> bool:
        return self.start is not None and step >= self.start

    def step(self, batches: MicroBatches) -> Metrics:
        step = self.scheduler.last_epoch  # the number of steps taken: restored with the scheduler
        self.critic.active = self.active_at(step)
        self.optimizer.zero_grad(set_to_none=True)
        self.critic_optimizer.zero_grad(set_to_none=True)
        combined = accumulate(batches)
        if self.config.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        self.optimizer.step()
        if self.critic.active:
            if self.config.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(self.critic.parameters(), self.config.grad_clip)
            for group in self.critic_optimizer.param_groups:
                group["lr"] = self.critic_lr * self.factor(step)
            self.critic_optimizer.step()
        self.scheduler.step()
        return combined

    def last_lr(self) -> float:
        return self.scheduler.get_last_lr()[0]

    def state_dict(self) -> dict[str, Any]:
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "critic": {k: v.detach().cpu() for k, v in self.critic.state_dict().items()},
            "critic_optimizer": self.critic_optimizer.state_dict(),
        }

    def load_state_dict(self, payload: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(payload["optimizer"])
        self.scheduler.load_state_dict(payload["scheduler"])
        self.critic.load_state_dict(payload["critic"])
        self.critic_optimizer.load_state_dict(payload["critic_optimizer"])
