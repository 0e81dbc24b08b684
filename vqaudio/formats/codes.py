"""Codes files: a plain integer `.npy` (or, for a two-level model, an uncompressed `.npz` holding
`bottom` and `top`) and the JSON sidecar `CODES.npy.json` that says which model made them and how
to turn them back into a waveform of the original length.

Reading parses the bytes itself: nothing is unpickled, every header is checked against the bytes
that follow, and a header that declares a huge array is refused before anything is allocated.
"""

from __future__ import annotations

import json
import math
import zipfile
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, StrictInt, StrictStr, ValidationError

from vqaudio.errors import VQAudioError
from vqaudio.fileio import atomic_output

SIDECAR_FORMAT = "vqaudio-codes"
SIDECAR_VERSION = 1  # one level: a .npy of [frames] or [n_q, frames]
SIDECAR_VERSION_LEVELS = 2  # two levels: a .npz of bottom [frames] and top [frames / ratio], sidecar["top"]


class TopCodes(BaseModel):
    """A two-level sidecar's description of the top codes."""

    model_config = ConfigDict(extra="allow")
    codebook_size: StrictInt
    hop: StrictInt  # samples per top code frame (the bottom hop times the ratio)
    frames: StrictInt


class CodesSidecar(BaseModel):
    """The sidecar of a codes file. Unknown keys are kept (a newer vqaudio may add some)."""

    model_config = ConfigDict(extra="allow")
    format: Literal["vqaudio-codes"] = SIDECAR_FORMAT
    version: Literal[1, 2] = SIDECAR_VERSION
    fingerprint: StrictStr
    sample_rate: StrictInt
    hop: StrictInt
    codebook_size: StrictInt
    n_q: StrictInt = 1
    bitrate: float | None = None
    speaker: str | None = None
    speaker_index: StrictInt | None = None
    num_samples: StrictInt
    shape: list[int] | None = None
    source: str | None = None
    top: TopCodes | None = None
    ratio: StrictInt = 1  # bottom frames per top frame (1: one level)

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json", exclude_none=False, exclude=set() if self.top else {"top", "ratio"}), indent=2) + "\n"


def codes_dtype(codebook_size: int) -> type:
    """The narrowest integer type that holds every code."""
    return np.int16 if codebook_size <= 32768 else np.int32


def sidecar_for(codes_path: Path) -> Path:
    return codes_path.with_name(codes_path.name + ".json")


NPY_MAGIC = b"\x93NUMPY"


def _read_npy(handle: Any, size: int, path: Path, what: str = "") -> np.ndarray:
    """Read one .npy from `handle` (`size` bytes) after checking its header against the bytes:
    integer dtype, one or two dimensions, and exactly the bytes the header declares. Nothing is
    unpickled, and a header declaring a huge shape is refused before anything is allocated."""
    where = f"{path}{what}"
    if handle.read(len(NPY_MAGIC)) != NPY_MAGIC:
        problem = "it is empty" if size == 0 else "it does not start with the NumPy magic bytes"
        raise VQAudioError(f"{where}: not a .npy codes file ({problem}); give the file vqaudio encode wrote")
    handle.seek(0)
    try:
        version = np.lib.format.read_magic(handle)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(handle)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(handle)
        else:
            raise ValueError(f".npy format version {version[0]}.{version[1]} is not supported")
    except Exception as exc:  # numpy parses the header with Python's tokenizer: any failure means damage
        detail = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        raise VQAudioError(f"{where}: not a readable .npy codes file (damaged header: {detail})") from None
    if dtype.hasobject:
        raise VQAudioError(f"{where}: holds Python objects (pickled data), which vqaudio never loads; give integer codes")
    if not np.issubdtype(dtype, np.integer):
        raise VQAudioError(f"{where}: codes must be integers, found dtype {dtype}")
    count = math.prod(shape)
    if len(shape) not in (1, 2) or count == 0:
        raise VQAudioError(f"{where}: codes must be a non-empty [frames] or [n_q, frames] array, found shape {shape}")
    declared, present = count * dtype.itemsize, size - handle.tell()
    if declared != present:
        problem = "truncated" if present < declared else "longer than its header says"
        raise VQAudioError(
            f"{where}: {problem}: the header declares a {shape} {dtype} array ({declared} bytes) "
            f"but {present} bytes follow; re-encode the audio"
        )
    data = np.frombuffer(handle.read(declared), dtype=dtype, count=count).copy()  # writable, like np.load
    return data.reshape(shape, order="F" if fortran else "C")


def _check_path(path: Path) -> None:
    if not path.exists():
        raise VQAudioError(f"{path}: no such codes file")
    if path.is_dir():
        raise VQAudioError(f"{path}: is a folder; give a codes file written by vqaudio encode")


def _load_codes_array(path: Path) -> np.ndarray:
    """A checked .npy codes array (see `_read_npy`)."""
    _check_path(path)
    with open(path, "rb") as handle:
        return _read_npy(handle, path.stat().st_size, path)


NPZ_MEMBERS = ("bottom.npy", "top.npy")


def _load_codes_levels(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(bottom, top) from a two-level .npz, each member checked like a .npy. Only stored
    (uncompressed) members are read, so a small file cannot expand into a huge allocation."""
    _check_path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            infos = {info.filename: info for info in archive.infolist()}
            if sorted(infos) != sorted(NPZ_MEMBERS):
                raise VQAudioError(f"{path}: a two-level codes file holds exactly 'bottom' and 'top'; found {sorted(infos)}")
            arrays = []
            for name in NPZ_MEMBERS:
                info = infos[name]
                if info.compress_type != zipfile.ZIP_STORED:
                    raise VQAudioError(f"{path}: member {name} is compressed; write codes with vqaudio encode (np.savez)")
                if info.file_size > path.stat().st_size:  # a stored member cannot be larger than its archive
                    raise VQAudioError(f"{path}: member {name} claims {info.file_size} bytes, more than the file holds")
                with archive.open(info) as handle:
                    arrays.append(_read_npy(handle, info.file_size, path, f" ({name})"))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError) as exc:
        raise VQAudioError(f"{path}: not a readable two-level codes file ({str(exc).splitlines()[0][:120]}); re-encode the audio") from None
    bottom, top = arrays
    return bottom, top


def read_codes(path: Path) -> tuple[np.ndarray, CodesSidecar]:
    """Load a one-level codes file and its sidecar, checking both are well formed."""
    codes, top, sidecar = read_code_levels(path)
    if top is not None:
        raise VQAudioError(f"{path}: holds two-level codes; read it with read_code_levels")
    return codes, sidecar


def _describe_error(error: dict[str, Any]) -> str:
    key = ".".join(str(p) for p in error["loc"]) or "(top level)"
    return f"{key}: {error['msg']} (got {error.get('input')!r})"


def read_code_levels(path: Path) -> tuple[np.ndarray, np.ndarray | None, CodesSidecar]:
    """Load a codes file (.npy, or .npz with two levels) and its sidecar, checking both are well
    formed: (codes [n_q, frames], top codes [1, frames / ratio] or None, sidecar)."""
    top: np.ndarray | None = None
    if path.suffix.lower() == ".npz" and path.is_file() and not zipfile.is_zipfile(path):
        raise VQAudioError(f"{path}: not a two-level codes file (not a .npz archive); give the file vqaudio encode wrote")
    if path.is_file() and zipfile.is_zipfile(path):
        codes, top = _load_codes_levels(path)
        if top.ndim != 1 or codes.ndim != 1:
            raise VQAudioError(f"{path}: two-level codes must be 1-D bottom and top arrays, found {codes.shape} and {top.shape}")
        top = top[None]
    else:
        codes = _load_codes_array(path)
    side = sidecar_for(path)
    if not side.exists():
        raise VQAudioError(f"{side}: missing; the codes file needs the sidecar vqaudio encode wrote beside it")
    try:
        raw = json.loads(side.read_text())
    except (ValueError, OSError) as exc:
        raise VQAudioError(f"{side}: not valid JSON ({exc})") from None
    if not isinstance(raw, dict) or raw.get("format") != SIDECAR_FORMAT:
        raise VQAudioError(f"{side}: not a vqaudio codes sidecar")
    expected_version = SIDECAR_VERSION if top is None else SIDECAR_VERSION_LEVELS
    version = raw.get("version")
    if version not in (SIDECAR_VERSION, SIDECAR_VERSION_LEVELS) or isinstance(version, bool):
        raise VQAudioError(f"{side}: sidecar version {version!r} is not supported (expected {expected_version})")
    if version != expected_version:
        levels = "one-level" if top is None else "two-level"
        raise VQAudioError(f"{side}: a version {version} sidecar, but {path} holds {levels} codes; the files do not belong together")
    needed = {"fingerprint": str, "sample_rate": int, "hop": int, "codebook_size": int, "num_samples": int}
    missing = [k for k in needed if k not in raw]
    if missing:
        raise VQAudioError(f"{side}: missing {', '.join(missing)}; re-encode the audio with vqaudio encode")
    wrong = [k for k, kind in needed.items() if not isinstance(raw[k], kind) or isinstance(raw[k], bool)]
    if wrong:
        shown = ", ".join(f"{k} = {raw[k]!r}" for k in wrong)
        raise VQAudioError(f"{side}: {shown} has the wrong type; re-encode the audio with vqaudio encode")
    if raw["num_samples"] < 1:
        raise VQAudioError(f"{side}: num_samples must be positive")
    if top is not None:
        described = raw.get("top")
        if not isinstance(described, dict) or not all(
            isinstance(described.get(k), int) and not isinstance(described.get(k), bool) for k in ("codebook_size", "hop", "frames")
        ):
            raise VQAudioError(f"{side}: a two-level sidecar needs top.codebook_size, top.hop and top.frames; re-encode the audio")
    try:
        sidecar = CodesSidecar.model_validate(raw)
    except ValidationError as exc:
        raise VQAudioError(f"{side}: {_describe_error(exc.errors()[0])}; re-encode the audio with vqaudio encode") from None
    codes = codes.reshape(-1, codes.shape[-1])  # always [n_q, frames] from here on
    if sidecar.n_q != codes.shape[0]:
        raise VQAudioError(f"{path}: holds {codes.shape[0]} codebook(s) but the sidecar says n_q = {sidecar.n_q!r}")
    if top is not None and sidecar.top is not None and sidecar.top.frames != top.shape[-1]:
        raise VQAudioError(f"{path}: {top.shape[-1]} top frames but the sidecar says {sidecar.top.frames}")
    return codes, top, sidecar


def write_codes_file(target: Path, codes: np.ndarray, top: np.ndarray | None, sidecar: CodesSidecar) -> None:
    """Write codes [n_q, frames] (a .npy; [frames] for one codebook) or, with `top` [1, frames / ratio],
    a two-level .npz, then the sidecar; each through a temporary file renamed into place."""
    codes = codes.astype(codes_dtype(sidecar.codebook_size))
    if codes.shape[0] == 1:
        codes = codes[0]
    with atomic_output(target, force=True) as tmp, open(tmp, "wb") as handle:
        if top is None:
            np.save(handle, codes, allow_pickle=False)
        else:
            assert sidecar.top is not None
            np.savez(handle, bottom=codes, top=top[0].astype(codes_dtype(sidecar.top.codebook_size)))
    with atomic_output(sidecar_for(target), force=True) as tmp:
        tmp.write_text(sidecar.to_json())
