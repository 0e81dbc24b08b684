"""The codes of a whole corpus under one VQ-VAE, extracted once and cached beside that VQ-VAE's run.

A prior trains on these. The cache file is `<vqvae run>/codes/<fingerprint>-<corpus key>.npz`
(for a checkpoint outside a run folder, `codes/` beside the checkpoint), holding plain integer and
string arrays loaded with allow_pickle=False. A new checkpoint or a changed
corpus gets a new file, and an interrupted extraction leaves nothing behind (temporary file, renamed).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vqaudio.data.corpus import ProgressFn, heldout_split, prepare_corpus
from vqaudio.errors import VQAudioError
from vqaudio.fileio import atomic_output
from vqaudio.formats.checkpoint import Checkpoint
from vqaudio.formats.metadata import AudioVQVAEMetadata
from vqaudio.models.audio_vqvae import AudioVQVAE
from vqaudio.models.streaming import encode_chunks


@dataclass
class CodeCorpus:
    ids: list[str]
    speaker_index: np.ndarray  # [N] index into the VQ-VAE's speakers
    offsets: np.ndarray  # [N + 1] frame offsets into `codes`
    codes: np.ndarray  # [n_q, total frames]
    valid: list[int]  # utterances held out (the VQ-VAE's own held-out split)
    train: list[int]
    top: np.ndarray | None = None  # two-level models: [1, total frames / ratio]
    ratio: int = 1  # bottom frames per top frame

    def utterance(self, index: int) -> np.ndarray:
        return self.codes[:, self.offsets[index] : self.offsets[index + 1]]

    def utterance_top(self, index: int) -> np.ndarray:
        """A two-level model's top codes of one utterance [1, frames / ratio]."""
        assert self.top is not None
        return self.top[:, self.offsets[index] // self.ratio : self.offsets[index + 1] // self.ratio]

    def frames(self, index: int) -> int:
        return int(self.offsets[index + 1] - self.offsets[index])


def _load(path: Path) -> CodeCorpus:
    with np.load(path, allow_pickle=False) as data:
        return CodeCorpus(
            ids=[str(x) for x in data["ids"]],
            speaker_index=data["speaker_index"],
            offsets=data["offsets"],
            codes=data["codes"],
            valid=[int(x) for x in data["valid"]],
            train=[int(x) for x in data["train"]],
            top=data["top"] if "top" in data.files else None,
            ratio=int(data["ratio"]) if "ratio" in data.files else 1,
        )


def extract_code_corpus(
    model: AudioVQVAE, checkpoint: Checkpoint, on_progress: ProgressFn | None = None
) -> tuple[CodeCorpus, Path]:
    """Codes of every utterance of the corpus the VQ-VAE in `checkpoint` (built as `model`) was
    trained on (cached); returns (corpus, cache file). The model is not changed."""
    recipe, meta = checkpoint.recipe, checkpoint.metadata
    assert isinstance(meta, AudioVQVAEMetadata)
    audio = prepare_corpus(recipe.data)
    train, valid = heldout_split(audio, recipe.data.valid_per_speaker, recipe.data.valid_max)
    key = hashlib.sha256(json.dumps([audio.ids, audio.lengths, audio.speakers]).encode()).hexdigest()[:12]
    folder = checkpoint.path.resolve().parent
    if folder.name == "checkpoints":  # runs/<name>/<timestamp>/checkpoints/step_N.pt: beside the run's files
        folder = folder.parent
    cache = folder / "codes" / f"{checkpoint.fingerprint}-{key}.npz"
    if cache.exists():
        return _load(cache), cache
    missing = sorted(set(audio.speakers) - set(meta.speakers))
    if missing:
        raise VQAudioError(f"{checkpoint.path}: its corpus now has speakers the model does not know ({', '.join(missing)})")
    pieces, top_pieces, offsets = [], [], [0]
    for i in range(len(audio)):
        encoded = encode_chunks(model, [audio.audio(i)])
        pieces.append(encoded.codes)
        if encoded.top is not None:
            top_pieces.append(encoded.top)
        offsets.append(offsets[-1] + encoded.codes.shape[1])
        if on_progress:
            on_progress(i + 1, len(audio))
    speakers = np.array([meta.speakers.index(audio.speakers[s]) for s in audio.speaker_index], dtype=np.int64)
    arrays = {
        "ids": np.array(audio.ids, dtype=str),
        "speaker_index": speakers,
        "offsets": np.array(offsets, dtype=np.int64),
        "codes": np.concatenate(pieces, axis=1),
        "valid": np.array(valid, dtype=np.int64),
        "train": np.array(train, dtype=np.int64),
    }
    if top_pieces:  # a two-level model: every utterance covers whole top frames
        arrays.update(top=np.concatenate(top_pieces, axis=1), ratio=np.array(model.ratio, dtype=np.int64))
    cache.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(cache) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, **arrays)
    return _load(cache), cache
