import os

import pytest
import torch

from vqaudio.errors import VQAudioError
from vqaudio.formats.checkpoint import (
    load_checkpoint,
    model_fingerprint,
    save_checkpoint,
)


class Exploit:
    """Unpickling this would run os.system; a safe loader must refuse before that happens."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_round_trip(tmp_path):
    path = tmp_path / "c.pt"
    model = {"w": torch.ones(2)}
    save_checkpoint(path, {"kind": "audio_vqvae", "model": model, "fingerprint": model_fingerprint(model), "step": 3})
    payload = load_checkpoint(path)
    assert payload["step"] == 3 and torch.equal(payload["model"]["w"], torch.ones(2))
    assert not list(tmp_path.glob(".*tmp"))


def test_weights_that_do_not_match_their_fingerprint_are_refused(tmp_path):
    """PyTorch's zip container has no checksum it checks; the fingerprint catches flipped bits."""
    path = tmp_path / "c.pt"
    save_checkpoint(path, {"model": {"w": torch.ones(2)}, "fingerprint": model_fingerprint({"w": torch.zeros(2)})})
    with pytest.raises(VQAudioError, match=r"c\.pt: damaged checkpoint: its weights do not match"):
        load_checkpoint(path)
    save_checkpoint(path, {"fingerprint": "0"})
    with pytest.raises(VQAudioError, match="holds no model weights"):
        load_checkpoint(path)


def test_pickled_code_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"format": "vqaudio-checkpoint", "version": 1, "x": Exploit(marker)}, path)
    with pytest.raises(VQAudioError, match=r"evil\.pt: refused to load: it references .*system"):
        load_checkpoint(path)
    assert not marker.exists()


def test_truncated_checkpoint_is_named(tmp_path):
    path = tmp_path / "c.pt"
    save_checkpoint(path, {"model": {"w": torch.randn(1000)}})
    path.write_bytes(path.read_bytes()[:2000])
    with pytest.raises(VQAudioError, match=r"c\.pt: not a readable checkpoint"):
        load_checkpoint(path)


def test_foreign_file_is_refused(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"state_dict": {}}, path)
    with pytest.raises(VQAudioError, match="not a vqaudio checkpoint"):
        load_checkpoint(path)


def test_fingerprint_changes_with_any_weight():
    a = {"w": torch.zeros(3), "b": torch.ones(2)}
    b = {"w": torch.zeros(3), "b": torch.tensor([1.0, 1.0 + 1e-6])}
    assert model_fingerprint(a) == model_fingerprint({k: v.clone() for k, v in a.items()})
    assert model_fingerprint(a) != model_fingerprint(b)
