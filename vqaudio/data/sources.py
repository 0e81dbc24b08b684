"""Listing the audio files of a corpus on disk, each with its speaker and a stable utterance id."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from vqaudio.audio.io import AUDIO_SUFFIXES
from vqaudio.errors import VQAudioError


@dataclass(frozen=True)
class SourceFile:
    path: Path
    speaker: str
    utterance_id: str


def _audio_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())


def _require_folder(root: Path, what: str) -> None:
    if not root.exists():
        raise VQAudioError(f"{root}: no such folder (data.root for {what}); point data.root at the corpus")
    if not root.is_dir():
        raise VQAudioError(f"{root}: is a file; data.root must be the corpus folder")


def list_folder(root: Path, speaker_from: str = "folder", pattern: str = r"^(?P<speaker>[^_]+)_") -> list[SourceFile]:
    """Every audio file below `root`; the speaker is the parent folder's name, or taken from the
    file name by `pattern` (a regular expression with a group named 'speaker', matched on the stem)."""
    _require_folder(root, "a folder corpus")
    regex = None
    if speaker_from == "filename":
        try:
            regex = re.compile(pattern)
        except re.error as exc:
            raise VQAudioError(f"data.speaker_pattern {pattern!r}: not a valid regular expression ({exc})") from None
        if "speaker" not in regex.groupindex:
            raise VQAudioError(f"data.speaker_pattern {pattern!r}: needs a group named 'speaker', e.g. (?P<speaker>...)")
    files = []
    for path in _audio_files(root):
        rel = path.relative_to(root)
        if regex is None:
            speaker = rel.parent.name if rel.parent != Path(".") else root.name
        else:
            match = regex.search(path.stem)
            if match is None:
                raise VQAudioError(f"{path}: file name does not match data.speaker_pattern {pattern!r}")
            speaker = match.group("speaker")
        files.append(SourceFile(path, speaker, rel.with_suffix("").as_posix()))
    if not files:
        raise VQAudioError(f"{root}: no audio files ({', '.join(AUDIO_SUFFIXES)}) found below it")
    return files


_VCTK_092 = re.compile(r"^(?P<speaker>[ps]\d+)_(?P<utt>\d+)_(?P<mic>mic[12])$")
_VCTK_080 = re.compile(r"^(?P<speaker>[ps]\d+)_(?P<utt>\d+)$")


def list_vctk(root: Path, mic: str = "mic1") -> list[SourceFile]:
    """VCTK 0.92 (`wav48_silence_trimmed/pNNN/pNNN_MMM_mic1.flac`) or 0.80 (`wav48/pNNN/pNNN_MMM.wav`).

    With both layouts present, 0.92 wins. In 0.92 only `mic` is read ('mic1', 'mic2' or 'both').
    """
    _require_folder(root, "VCTK")
    new, old = root / "wav48_silence_trimmed", root / "wav48"
    files: list[SourceFile] = []
    if new.is_dir():
        for path in _audio_files(new):
            m = _VCTK_092.match(path.stem)
            if m and (mic == "both" or m.group("mic") == mic):
                utt = f"{m.group('speaker')}_{m.group('utt')}" + (f"_{m.group('mic')}" if mic == "both" else "")
                files.append(SourceFile(path, m.group("speaker"), utt))
    elif old.is_dir():
        for path in _audio_files(old):
            m = _VCTK_080.match(path.stem)
            if m:
                files.append(SourceFile(path, m.group("speaker"), path.stem))
    else:
        raise VQAudioError(
            f"{root}: not a VCTK folder (neither wav48_silence_trimmed/ of 0.92 nor wav48/ of 0.80 is in it)"
        )
    if not files:
        raise VQAudioError(f"{root}: the VCTK folder holds no recordings named like p225_001_{mic}.flac or p225_001.wav")
    return files


def read_speaker_info(root: Path) -> dict[str, dict[str, str]]:
    """The VCTK speaker table (`speaker-info.txt`): id -> {age, gender, accent, region}.

    0.80 writes ids as '225', 0.92 as 'p225'; both are returned as 'p225'. Missing file -> {}.
    """
    path = root / "speaker-info.txt"
    if not path.exists():
        return {}
    table: dict[str, dict[str, str]] = {}
    for line in path.read_text(errors="replace").splitlines()[1:]:
        parts = line.split()
        if len(parts) < 3:
            continue
        sid = parts[0] if parts[0][0] in "ps" else f"p{parts[0]}"
        table[sid] = {
            "age": parts[1],
            "gender": parts[2],
            "accent": parts[3] if len(parts) > 3 else "",
            "region": " ".join(parts[4:]),
        }
    return table
