"""Safe output files: written to a temporary file beside the target and renamed into place."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from vqaudio.errors import VQAudioError


def check_writable(path: Path, force: bool) -> None:
    """Refuse to replace an existing file unless `force`; make sure the folder exists."""
    if path.exists() and not force:
        raise VQAudioError(f"{path}: already exists; pass --force to overwrite it")
    if path.is_dir():
        raise VQAudioError(f"{path}: is a folder; give a file name")
    path.parent.mkdir(parents=True, exist_ok=True)


@contextlib.contextmanager
def atomic_output(path: Path, force: bool = True) -> Iterator[Path]:
    """Yield a temporary path next to `path`; on success it replaces `path`, on error it is removed.

    A crash or Ctrl-C part-way through never leaves a truncated file under the final name.
    """
    path = Path(path)
    check_writable(path, force)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the permissions `open` would
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
