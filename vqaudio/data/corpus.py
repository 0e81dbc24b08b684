"""An audio corpus at the model's sample rate: resampled once, cached as int16, read by crops.

Real corpora are converted file by file into `<cache>/<key>/NNNNNN.npy` (int16) with a manifest
written last, so an interrupted preparation simply resumes. Training memory-maps those files and
reads only the crops it needs; the corpus is never loaded whole.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vqaudio.audio.io import read_audio
from vqaudio.data import demo
from vqaudio.data.sources import SourceFile, list_folder, list_vctk, read_speaker_info
from vqaudio.errors import VQAudioError
from vqaudio.recipe import DataConfig

MANIFEST_VERSION = 1
MAX_OPEN_MAPS = 256
ProgressFn = Callable[[int, int], None]


def default_cache_dir() -> Path:
    """`$VQAUDIO_CACHE`, else `$XDG_CACHE_HOME/vqaudio`, else `~/.cache/vqaudio`."""
    if os.environ.get("VQAUDIO_CACHE"):
        return Path(os.environ["VQAUDIO_CACHE"])
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "vqaudio"


@dataclass
class AudioCorpus:
    """Utterances with speaker indices; `speakers[i]` is the name of speaker index i."""

    sample_rate: int
    speakers: list[str]
    ids: list[str]
    speaker_index: list[int]
    lengths: list[int]
    speaker_info: dict[str, dict[str, str]] = field(default_factory=dict)
    arrays: list[np.ndarray] | None = None  # in-memory float32 audio (the demo corpus)
    folder: Path | None = None  # cache folder of int16 .npy files (real corpora)
    _maps: dict[int, np.ndarray] = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return len(self.ids)

    def audio(self, index: int) -> np.ndarray:
        """The whole utterance as float32 (a copy; cheap for one utterance)."""
        return self.crop(index, 0, self.lengths[index])

    def crop(self, index: int, start: int, length: int) -> np.ndarray:
        """`length` samples from `start`, zero-padded past the end; float32 in [-1, 1]."""
        if self.arrays is not None:
            source = self.arrays[index]
            scale = 1.0
        else:
            source = self._maps.get(index)
            if source is None:
                if len(self._maps) >= MAX_OPEN_MAPS:  # each memory map holds a file descriptor
                    self._maps.clear()
                source = self._maps[index] = np.load(self.folder / f"{index:06d}.npy", mmap_mode="r")
            scale = 1.0 / 32768
        piece = np.asarray(source[start : start + length], dtype=np.float32) * scale
        if piece.size < length:
            piece = np.pad(piece, (0, length - piece.size))
        return piece


def _index_speakers(files: list[SourceFile], wanted: list[str] | None) -> tuple[list[SourceFile], list[str]]:
    names = sorted({f.speaker for f in files})
    if wanted:
        missing = sorted(set(wanted) - set(names))
        if missing:
            raise VQAudioError(f"data.speakers: {', '.join(missing)} not found in the corpus (it has {', '.join(names[:10])}...)")
        names = sorted(set(wanted))
        files = [f for f in files if f.speaker in names]
    return files, names


def demo_corpus(config: DataConfig) -> AudioCorpus:
    """The embedded synthetic corpus, generated in memory (about a second of CPU)."""
    d = config.demo
    names = [demo.speaker_name(s) for s in range(d.speakers)]
    arrays, ids, speakers = [], [], []
    for s in range(d.speakers):
        for u in range(d.utterances_per_speaker):
            arrays.append(demo.synthesize_utterance(s, u, d.seconds, config.sample_rate, d.seed))
            ids.append(f"{names[s]}_{u:03d}")
            speakers.append(s)
    if config.speakers:
        keep = [i for i, sid in enumerate(speakers) if names[sid] in config.speakers]
        if not keep:
            raise VQAudioError(f"data.speakers: none of {config.speakers} is a demo speaker ({', '.join(names)})")
        sub = sorted({names[speakers[i]] for i in keep})
        arrays = [arrays[i] for i in keep]
        ids = [ids[i] for i in keep]
        speakers = [sub.index(names[speakers[i]]) for i in keep]
        names = sub
    return AudioCorpus(config.sample_rate, names, ids, speakers, [a.size for a in arrays], arrays=arrays)


def _cache_key(config: DataConfig, root: Path, files: list[SourceFile]) -> str:
    h = hashlib.sha256()
    h.update(json.dumps([MANIFEST_VERSION, config.kind, str(root.resolve()), config.sample_rate]).encode())
    for f in files:
        stat = f.path.stat()
        h.update(f"{f.path.relative_to(root)}|{f.speaker}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def prepare_corpus(config: DataConfig, on_progress: ProgressFn | None = None) -> AudioCorpus:
    """List, resample and cache a real corpus (VCTK or a folder tree), or build the demo corpus."""
    if config.kind == "demo":
        return demo_corpus(config)
    root = Path(config.root).expanduser()
    if config.kind == "vctk":
        files = list_vctk(root, config.vctk_mic)
        info = read_speaker_info(root)
    else:
        files = list_folder(root, config.speaker_from, config.speaker_pattern)
        info = {}
    files, names = _index_speakers(files, config.speakers)
    cache_root = Path(config.cache_dir).expanduser() if config.cache_dir else default_cache_dir()
    folder = cache_root / f"{config.kind}-{_cache_key(config, root, files)}"
    manifest_path = folder / "manifest.json"
    if manifest_path.exists():
        manifest = json.loads(manifest_path.read_text())
        lengths = manifest["lengths"]
    else:
        folder.mkdir(parents=True, exist_ok=True)
        lengths = []
        for i, f in enumerate(files):
            target = folder / f"{i:06d}.npy"
            if target.exists():
                lengths.append(int(np.load(target, mmap_mode="r").shape[0]))
            else:
                audio = read_audio(f.path, config.sample_rate)
                pcm = np.clip(np.round(audio * 32768), -32768, 32767).astype(np.int16)
                tmp = target.with_suffix(".tmp.npy")
                np.save(tmp, pcm)
                os.replace(tmp, target)
                lengths.append(int(pcm.size))
            if on_progress:
                on_progress(i + 1, len(files))
        manifest = {
            "version": MANIFEST_VERSION,
            "root": str(root.resolve()),
            "sample_rate": config.sample_rate,
            "files": [str(f.path) for f in files],
            "lengths": lengths,
        }
        tmp = manifest_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(manifest))
        os.replace(tmp, manifest_path)
    speaker_index = [names.index(f.speaker) for f in files]
    used_info = {name: info[name] for name in names if name in info}
    return AudioCorpus(
        config.sample_rate, names, [f.utterance_id for f in files], speaker_index, lengths, used_info, folder=folder
    )


def heldout_split(corpus: AudioCorpus, per_speaker: int, max_total: int) -> tuple[list[int], list[int]]:
    """A fixed held-out set: from each speaker with at least 3 utterances, the `per_speaker` whose
    ids hash lowest (stable whatever order files are listed in), at most `max_total` in all."""
    by_speaker: dict[int, list[int]] = {}
    for i, s in enumerate(corpus.speaker_index):
        by_speaker.setdefault(s, []).append(i)
    ranked: list[list[int]] = []
    for s in sorted(by_speaker):
        items = by_speaker[s]
        if len(items) >= 3:
            order = sorted(items, key=lambda i: hashlib.sha1(corpus.ids[i].encode()).hexdigest())
            ranked.append(order[: min(per_speaker, len(items) - 2)])
    # Round-robin over speakers so that a cap of `max_total` still covers as many speakers as it can.
    valid: list[int] = []
    for rank in range(per_speaker):
        valid += [items[rank] for items in ranked if rank < len(items)]
    valid = sorted(valid[:max_total])
    chosen = set(valid)
    train = [i for i in range(len(corpus)) if i not in chosen]
    return train, valid
