"""Encoding, scoring and code extraction never change a model, whatever mode it was left in."""

from __future__ import annotations

import numpy as np
import torch
from conftest import tiny_dict

from vqaudio.data.demo import synthesize_utterance
from vqaudio.evaluation.evaluate import decoder_nll_bits
from vqaudio.formats.checkpoint import (
    model_fingerprint,
    read_checkpoint,
    save_checkpoint,
)
from vqaudio.formats.metadata import AudioVQVAEMetadata
from vqaudio.inference.load import Codec
from vqaudio.models.build import build_audio_vqvae
from vqaudio.models.streaming import encode_audio, encode_chunks
from vqaudio.recipe import validate_recipe
from vqaudio.tasks.code_corpus import extract_code_corpus


def _snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _assert_unchanged(model: torch.nn.Module, before: dict[str, torch.Tensor]) -> None:
    after = model.state_dict()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed == []


def _model_in_training_mode():
    recipe = validate_recipe(tiny_dict(model={**tiny_dict()["model"], "quantizer": {"codebook_size": 32, "dim": 8, "restart_threshold": 0.5}}), "t")
    model = build_audio_vqvae(recipe.model, 2)
    model.train()  # the quantiser would learn from what it sees here
    return recipe, model


def test_encoding_leaves_a_model_in_training_mode_unchanged():
    _, model = _model_in_training_mode()
    audio = synthesize_utterance(0, 0, 0.3, 16000)
    before = _snapshot(model)
    encode_audio(model, audio)
    encode_chunks(model, [audio[:1000], audio[1000:]], chunk_frames=8)
    _assert_unchanged(model, before)
    assert model.training and model.quantizer.levels[0].training  # its mode is given back


def test_a_training_mode_model_would_change_without_the_guard():
    """The check above can fail: the same forward pass in training mode does update the codebook."""
    _, model = _model_in_training_mode()
    before = _snapshot(model)
    with torch.no_grad():
        model(torch.from_numpy(synthesize_utterance(0, 0, 0.3, 16000)[:4096])[None], torch.tensor([0]))
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_scoring_and_code_extraction_leave_the_model_unchanged(tmp_path):
    recipe, model = _model_in_training_mode()
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    meta = AudioVQVAEMetadata(speakers=["demo0", "demo1"], sample_rate=16000, hop=model.hop, codebook_size=32)
    path = tmp_path / "runs" / "tiny" / "r" / "checkpoints" / "step_000001.pt"
    save_checkpoint(path, {"kind": "audio_vqvae", "recipe": recipe.to_dict(), "step": 1, "model": state,
                           "fingerprint": model_fingerprint(state), "metadata": meta.model_dump()})  # fmt: skip
    checkpoint = read_checkpoint(path)
    codec = Codec(model, path, checkpoint.fingerprint, 1, meta, recipe, {}, torch.device("cpu"))
    before = _snapshot(model)
    decoder_nll_bits(codec, synthesize_utterance(1, 0, 0.2, 16000), 1)
    corpus, _ = extract_code_corpus(model, checkpoint)
    _assert_unchanged(model, before)
    assert model.training and corpus.codes.shape[0] == 1 and np.all(corpus.codes < 32)
