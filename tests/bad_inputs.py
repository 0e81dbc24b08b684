"""Broken and unusual inputs, and what the command line must say about each.

Used by tests/test_bad_input.py (which asserts every message, exit code 2, a single line and no
output left behind) and by scripts/bad_inputs_report.py (which prints the table for the notes).
"""

from __future__ import annotations

import io
import json
import shutil
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import yaml

RATE = 8000  # the tiny test model's rate


@dataclass(frozen=True)
class BadInput:
    name: str  # what is wrong, as the report lists it
    make: Callable[[Path, Path], list[str]]  # (folder, checkpoint) -> CLI arguments; writes the input
    message: str  # a piece of the one-line error
    output: str | None = None  # a file name in the folder that must not exist afterwards


def tone(seconds: float = 0.5, rate: int = RATE, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    mono = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    return mono if channels == 1 else np.stack([mono * (1 - 0.1 * c) for c in range(channels)], axis=1)


def wav_bytes(audio: np.ndarray, rate: int = RATE, subtype: str = "PCM_16", fmt: str = "WAV") -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, audio, rate, subtype=subtype, format=fmt)
    return buffer.getvalue()


# ----- audio files given to `vqaudio encode` -----


def encode_bytes(data: bytes, name: str = "in.wav") -> Callable[[Path, Path], list[str]]:
    def make(folder: Path, checkpoint: Path) -> list[str]:
        (folder / name).write_bytes(data)
        return ["encode", str(folder / name), str(folder / "out.npy"), "-c", str(checkpoint)]

    return make


def with_sample(value: float) -> bytes:
    audio = tone()
    audio[100] = value
    return wav_bytes(audio, subtype="FLOAT")


def flipped_flac() -> bytes:
    data = bytearray(wav_bytes(tone(1.0), fmt="FLAC"))
    data[200:600] = bytes(range(200)) * 2
    return bytes(data)


def encode_path(name: str) -> Callable[[Path, Path], list[str]]:
    def make(folder: Path, checkpoint: Path) -> list[str]:
        if name == "folder":
            (folder / "folder").mkdir(exist_ok=True)
        return ["encode", str(folder / name), str(folder / "out.npy"), "-c", str(checkpoint)]

    return make


# ----- codes files given to `vqaudio decode` -----


def good_codes(folder: Path, checkpoint: Path) -> tuple[np.ndarray, dict]:
    """Encode a real clip once per folder; return its codes and sidecar."""
    if not (folder / "good.npy").exists():
        from vqaudio.inference.codec import encode_file
        from vqaudio.inference.load import load_codec

        (folder / "good.wav").write_bytes(wav_bytes(tone()))
        encode_file(load_codec(checkpoint, torch.device("cpu")), folder / "good.wav", folder / "good.npy")
    return np.load(folder / "good.npy"), json.loads((folder / "good.npy.json").read_text())


def decode_codes(
    array: Callable[[np.ndarray], np.ndarray] | None = None,
    raw: Callable[[bytes], bytes] | None = None,
    sidecar: Callable[[dict], object] | None = None,
    pickled: bool = False,
) -> Callable[[Path, Path], list[str]]:
    """A codes file made from a good one: its array changed, its bytes changed, or its sidecar changed
    (`sidecar` returning None removes it; returning bytes writes them as they are)."""

    def make(folder: Path, checkpoint: Path) -> list[str]:
        codes, side = good_codes(folder, checkpoint)
        target = folder / "in.npy"
        if pickled:
            np.save(target, np.array([{"not": "codes"}], dtype=object), allow_pickle=True)
        elif array is not None:
            np.save(target, array(codes))
        else:
            shutil.copy(folder / "good.npy", target)
        if raw is not None:
            target.write_bytes(raw(target.read_bytes()))
        new_side = side if sidecar is None else sidecar(dict(side))
        side_path = folder / "in.npy.json"
        side_path.unlink(missing_ok=True)
        if isinstance(new_side, bytes):
            side_path.write_bytes(new_side)
        elif new_side is not None:
            side_path.write_text(json.dumps(new_side))
        return ["decode", str(target), str(folder / "out.wav"), "-c", str(checkpoint)]

    return make


def at(index: int, value: int) -> Callable[[np.ndarray], np.ndarray]:
    def change(codes: np.ndarray) -> np.ndarray:
        codes = codes.astype(np.int64)
        codes[index] = value
        return codes

    return change


# ----- checkpoints given to `vqaudio info` / `decode -c` -----


class RunsCode:
    """Unpickling this would create a file: the evidence that a checkpoint ran code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def checkpoint_file(kind: str) -> Callable[[Path, Path], list[str]]:
    def make(folder: Path, checkpoint: Path) -> list[str]:
        target = folder / "bad.pt"
        good = checkpoint.read_bytes()
        if kind == "truncated":
            target.write_bytes(good[: len(good) // 2])
        elif kind == "empty":
            target.write_bytes(b"")
        elif kind == "pickled code":
            torch.save({"format": "vqaudio-checkpoint", "version": 1, "evil": RunsCode(folder / "ran.txt")}, target)
        elif kind == "flipped weights":
            archive = zipfile.ZipFile(checkpoint)
            member = max((i for i in archive.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
            start = member.header_offset + 30 + len(member.filename.encode()) + len(member.extra) + member.file_size // 2
            data = bytearray(good)
            data[start : start + 8] = b"\x7f" * 8
            target.write_bytes(bytes(data))
        return ["decode", str(folder / "missing.npy"), str(folder / "out.wav"), "-c", str(target)]

    return make


# ----- recipes given to `vqaudio train` -----


def recipe(change: Callable[[dict], object], *overrides: str) -> Callable[[Path, Path], list[str]]:
    def make(folder: Path, checkpoint: Path) -> list[str]:
        from conftest import tiny_dict

        data = tiny_dict(train={"runs_dir": str(folder / "runs")})
        changed = change(data)
        target = folder / "r.yaml"
        target.write_text(changed if isinstance(changed, str) else yaml.safe_dump(changed))
        return ["train", str(target), *overrides, "--quiet", "--device", "cpu"]

    return make


def edit(section: str, **values: object) -> Callable[[dict], dict]:
    def change(data: dict) -> dict:
        data[section].update(values)
        return data

    return change


def folder_corpus(root: str) -> Callable[[dict], dict]:
    def change(data: dict) -> dict:
        data["data"] = {"kind": "folder", "root": root, "sample_rate": RATE, "crop_samples": 512}
        return data

    return change


def empty_data_folder(folder: Path, checkpoint: Path) -> list[str]:
    (folder / "corpus").mkdir(exist_ok=True)
    (folder / "corpus" / "notes.txt").write_text("no audio here\n")
    return recipe(folder_corpus(str(folder / "corpus")))(folder, checkpoint)


BAD_INPUTS: list[BadInput] = [
    # audio
    BadInput("an empty audio file", encode_bytes(b""), "the file is empty (0 bytes)", "out.npy"),
    BadInput("a WAV cut inside its header", encode_bytes(wav_bytes(tone())[:30]), "cannot read it as audio", "out.npy"),
    BadInput("a WAV cut inside its samples", encode_bytes(wav_bytes(tone())[:2000]), "the WAV file is truncated", "out.npy"),
    BadInput("a FLAC cut in half", encode_bytes(wav_bytes(tone(1.0), fmt="FLAC")[:1500], "in.flac"), "damaged", "out.npy"),
    BadInput("a FLAC with damaged frames", encode_bytes(flipped_flac(), "in.flac"), "damaged", "out.npy"),
    BadInput("a text file named .wav", encode_bytes(b"hello, not audio\n" * 50), "cannot read it as audio", "out.npy"),
    BadInput("a PNG named .wav", encode_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200)), "cannot read it as audio", "out.npy"),
    BadInput("NaN samples", encode_bytes(with_sample(float("nan"))), "NaN or infinite samples", "out.npy"),
    BadInput("infinite samples", encode_bytes(with_sample(float("inf"))), "NaN or infinite samples", "out.npy"),
    BadInput("an audio path that does not exist", encode_path("nothing.wav"), "nothing.wav: no such file", "out.npy"),
    BadInput("a folder instead of an audio file", encode_path("folder"), "is a folder", "out.npy"),
    # codes
    BadInput("an empty codes file", decode_codes(raw=lambda b: b""), "not a .npy codes file (it is empty)", "out.wav"),
    BadInput("a truncated codes file", decode_codes(raw=lambda b: b[: len(b) // 2]), "truncated: the header declares", "out.wav"),
    BadInput("a codes file with a damaged header", decode_codes(raw=lambda b: b[:9] + b"\xff" * 20 + b[29:]), "damaged header", "out.wav"),
    BadInput("a codes file that is not .npy", decode_codes(raw=lambda b: b"0 1 2 3\n"), "not a .npy codes file", "out.wav"),
    BadInput("codes above the codebook", decode_codes(array=at(3, 32)), "codes must lie in 0..31, found", "out.wav"),
    BadInput("negative codes", decode_codes(array=at(3, -1)), "codes must lie in 0..31, found -1", "out.wav"),
    BadInput("float codes", decode_codes(array=lambda c: c.astype(np.float32)), "codes must be integers, found dtype float32", "out.wav"),
    BadInput("codes of three dimensions", decode_codes(array=lambda c: c.reshape(1, 1, -1)), "found shape (1, 1,", "out.wav"),
    BadInput("no codes at all", decode_codes(array=lambda c: c[:0]), "found shape (0,)", "out.wav"),
    BadInput("two codebooks where the sidecar says one", decode_codes(array=lambda c: np.stack([c, c])), "holds 2 codebook(s) but the sidecar says n_q = 1", "out.wav"),
    BadInput("pickled objects in the codes file", decode_codes(pickled=True), "holds Python objects (pickled data)", "out.wav"),
    BadInput("a missing sidecar", decode_codes(sidecar=lambda s: None), "in.npy.json: missing", "out.wav"),
    BadInput("a sidecar that is not JSON", decode_codes(sidecar=lambda s: b"{oops"), "in.npy.json: not valid JSON", "out.wav"),
    BadInput("a sidecar with a field removed", decode_codes(sidecar=lambda s: {k: v for k, v in s.items() if k != "hop"}), "missing hop", "out.wav"),
    BadInput("a sidecar with a field of the wrong type", decode_codes(sidecar=lambda s: {**s, "num_samples": "4000"}), "num_samples = '4000' has the wrong type", "out.wav"),
    BadInput("a sidecar whose length disagrees with the codes", decode_codes(sidecar=lambda s: {**s, "num_samples": 16}), "the files do not belong together", "out.wav"),
    BadInput("codes from another model", decode_codes(sidecar=lambda s: {**s, "fingerprint": "0123456789abcdef"}), "made by model '0123456789abcdef'", "out.wav"),
    BadInput("a codes path that does not exist", lambda f, c: ["decode", str(f / "none.npy"), str(f / "out.wav"), "-c", str(c)], "none.npy: no such codes file", "out.wav"),
    # checkpoints
    BadInput("a truncated checkpoint", checkpoint_file("truncated"), "not a readable checkpoint", "out.wav"),
    BadInput("an empty checkpoint", checkpoint_file("empty"), "not a readable checkpoint", "out.wav"),
    BadInput("a checkpoint holding pickled code", checkpoint_file("pickled code"), "refused to load", "out.wav"),
    BadInput("a checkpoint with flipped weight bytes", checkpoint_file("flipped weights"), "weights do not match the fingerprint", "out.wav"),
    BadInput("a checkpoint path that does not exist", lambda f, c: ["info", str(f / "none.pt")], "none.pt: no such checkpoint"),
    # recipes and data
    BadInput("a recipe with a misspelled key", recipe(edit("train", stepz=3)), "unknown key 'train.stepz' (did you mean 'train.steps'?)"),
    BadInput("a recipe with a misspelled section", recipe(lambda d: {**d, "modle": d.pop("model")}), "unknown key 'modle' (did you mean 'model'?)"),
    BadInput("a recipe value of the wrong type", recipe(edit("train", batch_size="eight")), "train.batch_size"),
    BadInput("an override with a typo", recipe(lambda d: d, "train.step=3"), "override train.step: unknown key"),
    BadInput("a recipe that is not YAML", recipe(lambda d: "train: [unclosed\n"), "not valid YAML at line 2"),
    BadInput("an empty recipe", recipe(lambda d: ""), "missing required key 'name'"),
    BadInput("a recipe path that does not exist", lambda f, c: ["train", str(f / "none.yaml")], "none.yaml: no such recipe file"),
    BadInput("a data folder with no audio", empty_data_folder, "no audio files (.wav, .flac, .ogg, .mp3, .aiff, .aif) found"),
    BadInput("a data folder that does not exist", recipe(folder_corpus("/nonexistent/corpus")), "/nonexistent/corpus: no such folder"),
    BadInput("--resume of a folder that is not a run", lambda f, c: ["train", "--resume", str(f)], "not a run folder"),
    # the command line itself
    BadInput("an unknown option", lambda f, c: ["encode", "--quiet"], "No such option: --quiet"),
    BadInput("an option value of the wrong type", lambda f, c: ["sample", "-n", "many"], "Invalid value for '-n'"),
]


# Unusual but valid audio: every one must encode and decode. (name, file name, bytes)
def valid_audio() -> list[tuple[str, str, bytes]]:
    return [
        ("silence", "silence.wav", wav_bytes(np.zeros(RATE // 2, np.float32))),
        ("one sample", "one.wav", wav_bytes(tone()[:1])),
        ("five samples (less than one code frame)", "five.wav", wav_bytes(tone()[:5])),
        ("4 kHz", "rate4k.wav", wav_bytes(tone(rate=4000), rate=4000)),
        ("192 kHz", "rate192k.wav", wav_bytes(tone(rate=192000), rate=192000)),
        ("stereo", "stereo.wav", wav_bytes(tone(channels=2))),
        ("six channels", "six.wav", wav_bytes(tone(channels=6))),
        ("24-bit PCM", "pcm24.wav", wav_bytes(tone(), subtype="PCM_24")),
        ("32-bit float", "float32.wav", wav_bytes(tone(), subtype="FLOAT")),
        ("64-bit float", "float64.wav", wav_bytes(tone().astype(np.float64), subtype="DOUBLE")),
        ("8-bit unsigned", "pcm8.wav", wav_bytes(tone(), subtype="PCM_U8")),
        ("24-bit FLAC", "pcm24.flac", wav_bytes(tone(), subtype="PCM_24", fmt="FLAC")),
        ("float above full scale", "loud.wav", wav_bytes(tone() * 4, subtype="FLOAT")),
    ]
