"""The audio VQ-VAE in the pieces `vqaudio export` writes, as plain functional modules.

Each module below is a forward pass with tensors in and tensors out, nothing kept between calls
and nothing computed in Python from tensor values, so that it traces into one graph (ONNX or
TorchScript) with free batch and length axes:

- `EncoderGraph`: audio [B, T] -> codes [B, n_q, T / hop] (and top codes [B, 1, T / (hop x ratio)]);
- `ConvDecoderGraph`: codes [B, n_q, F] (+ top codes, + speaker [B]) -> audio [B, F x hop];
- `ConditioningGraph`: codes (+ top codes, + speaker) -> the WaveNet's per-frame layer inputs
  [B, F, layers x gate] (`WaveNet.frame_bias`: conv biases + conditioning projections);
- `StepGraph`: one WaveNet position: (previous sample class [B], one row of the conditioning
  [B, layers x gate], per layer the inputs it saw at the last `span` positions [B, span, residual])
  -> (logits [B, out_channels], the histories shifted by one position).

The quantisers are re-stated here in evaluation form (no statistics, no restarts, no
straight-through gradients), with the arithmetic of their `forward` kept operation for
operation, so that codes come out exactly as `AudioVQVAE.encode` gives them.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from vqaudio.models.audio_vqvae import AudioVQVAE
from vqaudio.models.factorized import FactorizedQuantizer
from vqaudio.models.fsq import FiniteScalarQuantizer
from vqaudio.models.quantizer import VectorQuantizer
from vqaudio.models.residual_quantizer import ResidualVectorQuantizer
from vqaudio.models.top_level import TopLevel
from vqaudio.models.wavenet import HALF_SQRT, WaveNet


def exportable(model: AudioVQVAE) -> AudioVQVAE:
    """A copy of `model` in evaluation mode with plain weights: weight-norm parametrisations are
    folded into the weights they compute (the exporters trace them poorly, and they cost time)."""
    model = copy.deepcopy(model).eval()
    for module in model.modules():
        if parametrize.is_parametrized(module):
            for name in list(module.parametrizations.keys()):  # type: ignore[union-attr]
                parametrize.remove_parametrizations(module, name, leave_parametrized=True)
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model


# ----- quantisers, evaluation form -----


def _vq(level: VectorQuantizer, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`VectorQuantizer.forward` in evaluation: z [B, D, T] -> (quantised [B, D, T], codes [B, T])."""
    z = z.float()
    if level.cosine:
        z = F.normalize(z, dim=1)
    channels_last = z.transpose(1, 2)  # audio latents are [B, D, T]
    flat = channels_last.reshape(-1, level.dim)
    codebook = level.vectors().float()
    norms = codebook.pow(2).sum(1)
    codes_flat = torch.addmm(norms, flat, codebook.t(), alpha=-2.0).argmin(1)  # kmeans.nearest_code
    chosen = F.embedding(codes_flat, level.vectors()).view_as(channels_last).transpose(1, 2)
    quantized = z + (chosen - z)
    return quantized, codes_flat.view(channels_last.shape[:-1])


def _fsq(level: FiniteScalarQuantizer, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`FiniteScalarQuantizer.forward` in evaluation."""
    projected = level.project_in(z.float())
    grid = level.grid(projected.transpose(1, 2))
    return level.project_out(grid.transpose(1, 2)), level.codes_from_grid(grid)


def _factorised(level: FactorizedQuantizer, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`FactorizedQuantizer.forward` in evaluation."""
    quantized, codes = _vq(level.quantizer, level.project_in(z.float()))
    return level.project_out(quantized), codes


def _level(level: nn.Module, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(level, FiniteScalarQuantizer):
        return _fsq(level, z)
    if isinstance(level, FactorizedQuantizer):
        return _factorised(level, z)
    assert isinstance(level, VectorQuantizer)
    return _vq(level, z)


def quantise(quantizer: ResidualVectorQuantizer, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`ResidualVectorQuantizer.forward` in evaluation, every codebook: z [B, D, T] ->
    (the quantised latents [B, D, T], codes [B, n_q, T])."""
    residual = z
    total = torch.zeros_like(z, dtype=torch.float32)
    codes = []
    for level in quantizer.levels:
        quantized, level_codes = _level(level, residual)
        total = total + quantized
        residual = residual - quantized
        codes.append(level_codes)
    out = z.float() + (total - z.float()) if quantizer.straight_through_sum else total
    return out, torch.stack(codes, dim=1)


def _level_lookup(level: nn.Module, codes: torch.Tensor) -> torch.Tensor:
    """One level's `lookup` for codes [B, F] -> [B, D, F], its axes moved by `transpose` (the
    TorchScript-based ONNX exporter mistranslates `movedim(-1, 1)`)."""
    if isinstance(level, FiniteScalarQuantizer):
        return level.project_out(level.grid_from_codes(codes).transpose(1, 2))
    if isinstance(level, FactorizedQuantizer):
        return level.project_out(_level_lookup(level.quantizer, codes))
    assert isinstance(level, VectorQuantizer)
    return F.embedding(codes, level.vectors()).transpose(1, 2)


def lookup(quantizer: ResidualVectorQuantizer, codes: torch.Tensor) -> torch.Tensor:
    """Codes [B, n_q, F] -> the sum of their vectors [B, D, F] (`ResidualVectorQuantizer.lookup`)."""
    total = _level_lookup(quantizer.levels[0], codes[:, 0])
    for index in range(1, quantizer.n_q):
        total = total + _level_lookup(quantizer.levels[index], codes[:, index])
    return total


def expand(top: TopLevel, vectors: torch.Tensor) -> torch.Tensor:
    """`TopLevel.expand` with the repetition as a reshape (one op in any graph format)."""
    batch, channels, frames = vectors.shape
    repeated = vectors.unsqueeze(-1).expand(batch, channels, frames, top.ratio).reshape(batch, channels, frames * top.ratio)
    return top.expand_net(repeated)


def features(model: AudioVQVAE, codes: torch.Tensor, top_codes: torch.Tensor | None) -> torch.Tensor:
    """The decoder's input at the code rate: the code vectors (beside the expanded top features)."""
    vectors = lookup(model.quantizer, codes)
    if model.top is not None:
        assert top_codes is not None
        vectors = torch.cat([vectors, expand(model.top, lookup(model.top.quantizer, top_codes))], dim=1)
    return model.cond_net(vectors)


# ----- the graphs -----


class EncoderGraph(nn.Module):
    """audio [B, T] (T a multiple of hop x ratio) -> codes [B, n_q, T / hop] (, top codes [B, 1, T / (hop x ratio)])."""

    def __init__(self, model: AudioVQVAE) -> None:
        super().__init__()
        self.model = model

    def forward(self, audio: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        model = self.model
        z_e = model.encoder.net(audio.unsqueeze(1))
        if model.top is None:
            return quantise(model.quantizer, z_e)[1]
        top_quantized, top_codes = quantise(model.top.quantizer, model.top.encoder.net(z_e))
        _, codes = quantise(model.quantizer, z_e + model.top.to_bottom(expand(model.top, top_quantized)))
        return codes, top_codes


class ConvDecoderGraph(nn.Module):
    """codes [B, n_q, F] (, top codes [B, 1, F / ratio]) (, speaker [B]) -> audio [B, F x hop] in [-1, 1]."""

    def __init__(self, model: AudioVQVAE) -> None:
        super().__init__()
        self.model = model

    def forward(self, codes: torch.Tensor, *rest: torch.Tensor) -> torch.Tensor:
        return self.model.decoder(*_decoder_inputs(self.model, codes, rest)).clamp(-1.0, 1.0)


class ConditioningGraph(nn.Module):
    """codes [B, n_q, F] (, top codes) (, speaker [B]) -> every WaveNet layer's input bias per code frame
    [B, F, layers x gate]; sample t reads row t // hop."""

    def __init__(self, model: AudioVQVAE) -> None:
        super().__init__()
        self.model = model

    def forward(self, codes: torch.Tensor, *rest: torch.Tensor) -> torch.Tensor:
        decoder = self.model.decoder
        assert isinstance(decoder, WaveNet)
        return decoder.frame_bias(*_decoder_inputs(self.model, codes, rest), codes.shape[0])


def _decoder_inputs(
    model: AudioVQVAE, codes: torch.Tensor, rest: tuple[torch.Tensor, ...]
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(the decoder's features, the speaker vector) from the codes and the inputs after them: top
    codes, then the speaker index, each present when the model has it."""
    items = list(rest)
    top_codes = items.pop(0) if model.top is not None else None
    speaker = items.pop(0) if model.speaker_embedding is not None else None
    speaker_vector = model.speaker_embedding(speaker) if model.speaker_embedding is not None else None
    return features(model, codes, top_codes), speaker_vector


class StepGraph(nn.Module):
    """One WaveNet position, state passed in and out (a shift register per layer, oldest row first).

    Layer l with dilation d and kernel k reads its inputs at positions t - j d (j = 1..k-1); its
    history holds the last span = (k - 1) d of them, so row span - j d is position t - j d. Before
    the first position every history is zeros (the teacher-forced pass's zero left padding)."""

    def __init__(self, net: WaveNet) -> None:
        super().__init__()
        self.embed = net.embed
        self.kernel_size = net.kernel_size
        self.dilations = list(net.dilations)
        self.residual = net.residual_channels
        self.gate = net.gate_channels
        # conv weight [gate, residual, kernel] -> [kernel x residual, gate], oldest tap first (as the cached step lays it)
        self.register_buffer("conv_w", torch.stack([c.weight.detach().permute(2, 1, 0).reshape(-1, self.gate) for c in net.convs]))
        self.register_buffer("out_w", torch.stack([o.weight.detach().squeeze(-1).t() for o in net.outs]))
        self.register_buffer("out_b", torch.stack([o.bias.detach() for o in net.outs]))
        self.head = net.head

    @property
    def spans(self) -> list[int]:
        return [(self.kernel_size - 1) * d for d in self.dilations]

    def initial_state(self, batch: int) -> list[torch.Tensor]:
        return [torch.zeros(batch, span, self.residual) for span in self.spans]

    def forward(self, sample: torch.Tensor, bias: torch.Tensor, *history: torch.Tensor) -> tuple[torch.Tensor, ...]:
        gate, residual, half = self.gate, self.residual, self.gate // 2
        h = self.embed(sample)  # [B, residual]
        skip = None
        updated = []
        for layer, (dilation, past) in enumerate(zip(self.dilations, history, strict=True)):
            span = (self.kernel_size - 1) * dilation
            taps = [past[:, span - j * dilation] for j in range(self.kernel_size - 1, 0, -1)]
            stacked = torch.cat([*taps, h], dim=1)
            a = bias[:, layer * gate : (layer + 1) * gate] + stacked @ self.conv_w[layer]
            z = torch.tanh(a[:, :half]) * torch.sigmoid(a[:, half:])
            o = z @ self.out_w[layer] + self.out_b[layer]
            updated.append(torch.cat([past[:, 1:], h.unsqueeze(1)], dim=1))
            h = (h + o[:, :residual]) * HALF_SQRT
            skip = o[:, residual:] if skip is None else skip + o[:, residual:]
        assert skip is not None
        logits = self.head(skip.unsqueeze(-1)).squeeze(-1)
        return (logits, *updated)
