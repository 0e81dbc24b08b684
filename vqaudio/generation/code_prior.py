"""Code priors one code at a time: the cached stepper that entropy coding runs, and sampling."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from vqaudio.errors import VQAudioError
from vqaudio.generation.engine import Backend, generate
from vqaudio.generation.wavenet_step import Stepper
from vqaudio.models.code_prior import CodePrior


def check_top_frames(prior: CodePrior, top: torch.Tensor | None, frames: int) -> None:
    """A bottom prior needs exactly the top codes above `frames` bottom frames: one per `ratio`."""
    if top is not None and top.shape[-1] * prior.condition_ratio != frames:
        raise VQAudioError(
            f"{frames} bottom code frames need {-(-frames // prior.condition_ratio)} top code frames "
            f"(one per {prior.condition_ratio}); {top.shape[-1]} were given"
        )


class PriorStepper:
    """Cached incremental evaluation of the prior: `log_probs()` for the next code, then `feed(code)`.

    Encoder and decoder of an entropy-coded file both run exactly this, in the same order, so
    they compute the same probabilities. A bottom prior is given its top codes up front and
    refuses to step past the last frame they cover."""

    def __init__(self, prior: CodePrior, speaker: torch.Tensor, top: torch.Tensor | None = None) -> None:
        self.prior = prior
        net = prior.wavenet
        self.stepper = Stepper(net, speaker.shape[0])
        # [B, top frames or 1, layers * gate]: every position's layer inputs from the conditioning
        with torch.no_grad():
            self.biases = net.frame_bias(prior.condition_features(top), prior.global_features(speaker), speaker.shape[0])
        self.conditioned = top is not None
        self.position = 0
        self.previous = torch.full((speaker.shape[0],), prior.start_token, dtype=torch.long, device=speaker.device)
        self._pending: torch.Tensor | None = None

    @property
    def level(self) -> int:
        return self.position % self.prior.n_q

    def _frame(self) -> int:
        frame = self.position // self.prior.wavenet.hop
        if not self.conditioned:
            return 0  # one row of biases serves every position
        if frame >= self.biases.shape[1]:
            given = self.biases.shape[1]
            raise VQAudioError(
                f"the bottom prior needs top codes for top frame {frame}, but only {given} top frame(s) were given; "
                "pass the top codes of the whole sequence"
            )
        return frame

    @torch.no_grad()
    def log_probs(self) -> torch.Tensor:
        """log p(next code) [B, K] (computed once per position)."""
        if self._pending is None:
            logits = self.stepper(self.previous, self.biases[:, self._frame()])
            level_logits = self.prior.level_logits(logits[:, None], self.position)[:, 0]
            self._pending = F.log_softmax(level_logits.float(), dim=-1)
        return self._pending

    def feed(self, codes: torch.Tensor) -> None:
        """Advance past this position with the codes [B] that occurred there."""
        if self._pending is None:
            self.log_probs()
        self.previous = codes.long() + self.level * self.prior.codebook_size
        self.position += 1
        self._pending = None


@torch.no_grad()
def sample_codes(
    prior: CodePrior,
    frames: int,
    speaker: torch.Tensor,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
    on_progress: Callable[[int], None] | None = None,
    backend: Backend = "auto",
    top: torch.Tensor | None = None,
) -> torch.Tensor:
    """Draw codes [B, n_q, frames] from the prior for each speaker in `speaker` [B] (a bottom
    prior: given the `top` codes [B, 1, frames / ratio]).

    One codebook: the generation engine (its fastest back end for the device). Several: one
    level-masked step at a time, since each position may only draw codes of its own level."""
    check_top_frames(prior, top, frames)
    if prior.n_q == 1:
        result = generate(
            prior.wavenet,
            frames,
            batch=speaker.shape[0],
            cond=prior.condition_features(top),
            global_cond=prior.global_features(speaker),
            first_input=prior.start_token,
            temperature=temperature,
            generator=generator,
            backend=backend,
            on_progress=on_progress,
        )
        return result.classes[:, None, :].long()
    stepper = PriorStepper(prior, speaker, top)
    out = torch.empty(speaker.shape[0], frames * prior.n_q, dtype=torch.long)
    for position in range(frames * prior.n_q):
        log_probs = stepper.log_probs()
        if temperature <= 0:
            codes = log_probs.argmax(dim=-1)
        else:
            probs = torch.softmax(log_probs / temperature, dim=-1)
            codes = torch.multinomial(probs.cpu(), 1, generator=generator)[:, 0].to(log_probs.device)
        out[:, position] = codes.cpu()
        stepper.feed(codes)
        if on_progress is not None and (position + 1) % prior.n_q == 0:
            on_progress((position + 1) // prior.n_q)
    return out.reshape(speaker.shape[0], frames, prior.n_q).transpose(1, 2).contiguous()
