"""Which clips an evaluation runs on: a model's own held-out split, a recipe's split, a folder or a file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vqaudio.audio.io import AUDIO_SUFFIXES, read_audio
from vqaudio.data.corpus import ProgressFn, heldout_split, prepare_corpus
from vqaudio.errors import VQAudioError
from vqaudio.inference.codec import guess_speaker
from vqaudio.recipe import Recipe, load_recipe

SPLITS = ("valid", "train", "all")


@dataclass
class EvalClip:
    id: str
    speaker: str | None  # the speaker's name when known
    audio: np.ndarray  # mono float32 at the model's rate


def _recipe_clips(recipe: Any, split: str, sample_rate: int, on_progress: ProgressFn | None) -> list[EvalClip]:
    data = recipe.data.model_copy(update={"sample_rate": sample_rate})
    corpus = prepare_corpus(data, on_progress)
    train, valid = heldout_split(corpus, recipe.data.valid_per_speaker, recipe.data.valid_max)
    chosen = {"valid": valid, "train": train, "all": list(range(len(corpus)))}[split]
    if not chosen:
        raise VQAudioError(f"the {split} split of {recipe.name!r} has no clips; choose another split or pass --data DIR")
    return [EvalClip(corpus.ids[i], corpus.speakers[corpus.speaker_index[i]], corpus.audio(i)) for i in chosen]


def _file_clips(paths: list[Path], sample_rate: int, speakers: list[str], root: Path) -> list[EvalClip]:
    clips = []
    for path in paths:
        name = path.relative_to(root).with_suffix("").as_posix() if path != root else path.stem
        clips.append(EvalClip(name, guess_speaker(path, speakers), read_audio(path, sample_rate)))
    return clips


def select_clips(
    data: str | None,
    model_recipe: Recipe,
    sample_rate: int,
    speakers: list[str],
    on_progress: ProgressFn | None = None,
) -> tuple[list[EvalClip], str]:
    """The clips named by `--data`, and a description of them for the report.

    `data` is None (the held-out split of the recipe the model was trained with), a folder (every
    audio file below it), an audio file, or `RECIPE.yaml[:valid|train|all]`."""
    if data is None:
        recipe = model_recipe
        try:
            return _recipe_clips(recipe, "valid", sample_rate, on_progress), f"held-out split of {recipe.name!r}"
        except VQAudioError as exc:
            raise VQAudioError(f"{exc} (the model's own held-out data; pass --data DIR to evaluate other audio)") from None
    spec, _, split = data.partition(":")
    path = Path(spec)
    if spec.endswith((".yaml", ".yml")):
        split = split or "valid"
        if split not in SPLITS:
            raise VQAudioError(f"--data {data}: unknown split {split!r}; use {', '.join(SPLITS)}")
        recipe = load_recipe(path)
        return _recipe_clips(recipe, split, sample_rate, on_progress), f"{split} split of {path}"
    path = Path(data)
    if not path.exists():
        raise VQAudioError(f"--data {data}: no such folder, audio file or recipe")
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())
        if not files:
            raise VQAudioError(f"{path}: no audio files ({', '.join(AUDIO_SUFFIXES)}) below it")
        return _file_clips(files, sample_rate, speakers, path), f"{len(files)} files in {path}"
    return _file_clips([path], sample_rate, speakers, path), str(path)
