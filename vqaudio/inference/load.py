"""One `load(path)` for every checkpoint kind, returning a typed object ready to use.

Wherever a checkpoint is taken (`-c`, `--prior`, `--vqvae`, `--bottom`, `prior.vqvae`), a run
folder means its newest checkpoint. A prior is loaded with the VQ-VAE whose codes it models.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from vqaudio.bitrate import bitrate
from vqaudio.errors import VQAudioError
from vqaudio.formats.checkpoint import Checkpoint, list_checkpoints, read_checkpoint
from vqaudio.formats.metadata import (
    AudioVQVAEMetadata,
    CodePriorMetadata,
    ImageModelMetadata,
    ImagePriorMetadata,
)
from vqaudio.models.audio_vqvae import AudioVQVAE
from vqaudio.models.build import build_model
from vqaudio.models.code_prior import CodePrior
from vqaudio.models.pixelcnn import GatedPixelCNN, PixelCNNPrior
from vqaudio.recipe import IMAGE_MODELS, Recipe
from vqaudio.train.run_dir import newest_checkpoint

AUDIO_PRIOR, IMAGE_PRIOR = "code_prior", "image_prior"
PRIOR_KINDS = (AUDIO_PRIOR, IMAGE_PRIOR)
KIND_NAMES = {
    "audio_vqvae": "an audio VQ-VAE",
    AUDIO_PRIOR: "a code prior",
    IMAGE_PRIOR: "an image prior",
    "image_vqvae": "an image VQ-VAE",
    "image_vqvae2": "an image VQ-VAE-2",
    "image_vae": "an image VAE",
}


@dataclass
class Codec:
    """A trained audio VQ-VAE with what is needed to use it as a codec."""

    model: AudioVQVAE
    checkpoint: Path
    fingerprint: str
    step: int
    metadata: AudioVQVAEMetadata
    recipe: Recipe
    valid: dict[str, float]
    device: torch.device

    @property
    def sample_rate(self) -> int:
        return self.metadata.sample_rate

    @property
    def speakers(self) -> list[str]:
        return self.metadata.speakers

    @property
    def hop(self) -> int:
        return self.model.hop

    @property
    def codebook_size(self) -> int:
        return self.model.codebook_size

    @property
    def n_q(self) -> int:
        return self.model.n_q

    @property
    def ratio(self) -> int:
        """Bottom code frames per top code frame (1 for a one-level model)."""
        return self.model.ratio

    @property
    def top_codebook_size(self) -> int | None:
        return self.model.top_codebook_size

    @property
    def two_level(self) -> bool:
        return self.model.top is not None

    @property
    def top_hop(self) -> int:
        """Samples per coarsest code frame: encoding pads the audio to a whole number of these."""
        return self.model.top_hop

    def frames_for(self, num_samples: int) -> int:
        """Bottom code frames that cover `num_samples` samples."""
        return self.model.frames_for(num_samples)

    def bitrate(self, n_q: int | None = None) -> float:
        """Bits per second of raw codes from the first `n_q` codebooks (all by default), plus the top level's."""
        return bitrate(self.sample_rate, self.hop, self.codebook_size, n_q or self.n_q, self.ratio, self.top_codebook_size)

    def top_bitrate(self) -> float:
        """Bits per second of raw top codes (0 for a one-level model)."""
        return self.bitrate() - bitrate(self.sample_rate, self.hop, self.codebook_size, self.n_q)

    def check_n_q(self, n_q: int | None) -> int:
        if n_q is None:
            return self.n_q
        if not 1 <= n_q <= self.n_q:
            raise VQAudioError(f"--n-q {n_q}: this model has {self.n_q} codebook(s); choose 1..{self.n_q}")
        return n_q

    def speaker_index(self, speaker: str | int | None) -> int:
        """Accept an index ('3', 3) or a name ('p225'); None means speaker 0."""
        if speaker is None:
            return 0
        text = str(speaker)
        if text in self.speakers:
            return self.speakers.index(text)
        if text.lstrip("-").isdigit():
            index = int(text)
            if 0 <= index < len(self.speakers):
                return index
            raise VQAudioError(f"--speaker {index}: out of range; this model has speakers 0..{len(self.speakers) - 1}")
        shown = ", ".join(self.speakers[:12]) + (" ..." if len(self.speakers) > 12 else "")
        raise VQAudioError(f"--speaker {text!r}: not a speaker of this model (it knows {shown})")


@dataclass
class Prior:
    """A code prior and the VQ-VAE whose codes it models."""

    model: CodePrior
    codec: Codec
    checkpoint: Path
    fingerprint: str
    step: int
    valid: dict[str, float]
    metadata: CodePriorMetadata
    recipe: Recipe

    @property
    def level(self) -> str | None:
        """None over a one-level VQ-VAE; "top" or "bottom" over a two-level one."""
        return self.metadata.level

    @property
    def vqvae_fingerprint(self) -> str:
        return self.codec.fingerprint

    @property
    def code_rate(self) -> float:
        """Code frames per second (of the prior's own level)."""
        return self.codec.sample_rate / (self.codec.top_hop if self.level == "top" else self.codec.hop)


@dataclass
class ImageModel:
    """A trained image VQ-VAE, VQ-VAE-2 or VAE."""

    model: torch.nn.Module
    kind: str
    recipe: Recipe
    metadata: ImageModelMetadata
    checkpoint: Path
    fingerprint: str
    step: int

    @property
    def class_names(self) -> list[str]:
        return list(self.metadata.class_names)

    def label_index(self, label: str | int | None) -> int:
        """A class index ('3') or name ('cat'); None means 0."""
        names = self.class_names
        if label is None:
            return 0
        text = str(label)
        if text in names:
            return names.index(text)
        if text.isdigit() and int(text) < len(names):
            return int(text)
        raise VQAudioError(f"--label {text!r}: not a class of this model ({', '.join(names)})")


@dataclass
class ImagePrior:
    """A gated PixelCNN over an image VQ-VAE's code maps, with that VQ-VAE."""

    model: GatedPixelCNN
    vqvae: ImageModel
    checkpoint: Path
    fingerprint: str
    step: int
    metadata: ImagePriorMetadata
    recipe: Recipe

    @property
    def level(self) -> str | None:
        """None over a one-level VQ-VAE; "top" or "bottom" over a VQ-VAE-2."""
        return self.metadata.level

    @property
    def vqvae_fingerprint(self) -> str:
        return self.vqvae.fingerprint

    @property
    def code_shape(self) -> tuple[int, int]:
        height, width = self.metadata.code_shape
        return height, width


Loaded = Codec | Prior | ImageModel | ImagePrior


def resolve_checkpoint(path: str | Path, option: str = "-c") -> Path:
    """A checkpoint file as given, or a run folder's newest checkpoint."""
    path = Path(path).expanduser()
    if path.is_dir():
        found = list_checkpoints(path)
        if not found:
            raise VQAudioError(f"{option} {path}: the folder holds no checkpoints (runs/<name>/<run>/checkpoints/step_N.pt)")
        return found[-1]
    return path


def checkpoint_or_newest(path: str | Path | None, kinds: tuple[str, ...], runs_dir: Path = Path("runs"), option: str = "-c") -> Path:
    """The checkpoint named (a file or a run folder), or the newest of any of `kinds` under `runs_dir`."""
    if path is not None:
        return resolve_checkpoint(path, option)
    return newest_checkpoint(runs_dir, kinds)


def _vqvae_of(checkpoint: Checkpoint, given: str | Path | None) -> Path:
    meta = checkpoint.metadata
    assert isinstance(meta, (CodePriorMetadata, ImagePriorMetadata))
    vq_path = resolve_checkpoint(given, "--vqvae") if given is not None else Path(meta.vqvae_checkpoint)
    if not vq_path.is_file():
        raise VQAudioError(f"{checkpoint.path}: its VQ-VAE {vq_path} is gone; pass --vqvae with that model's checkpoint")
    return vq_path


def _codec(checkpoint: Checkpoint, model: torch.nn.Module, device: torch.device) -> Codec:
    assert isinstance(model, AudioVQVAE) and isinstance(checkpoint.metadata, AudioVQVAEMetadata)
    return Codec(
        model.to(device), checkpoint.path, checkpoint.fingerprint, checkpoint.step, checkpoint.metadata,
        checkpoint.recipe, checkpoint.valid, device,
    )  # fmt: skip


def load(path: str | Path, device: torch.device, vqvae: str | Path | None = None, kinds: tuple[str, ...] | None = None) -> Loaded:
    """The model at `path` (a checkpoint, or a run folder: its newest), as the typed object of
    its kind; a prior comes with its VQ-VAE (the one it names, or `vqvae`). `kinds`: refuse
    others with a one-line error that says what was found."""
    checkpoint = read_checkpoint(resolve_checkpoint(path))
    if kinds is not None and checkpoint.kind not in kinds:
        wanted = " or ".join(dict.fromkeys(KIND_NAMES[k] for k in kinds))
        hint = " (train recipes/demo_prior.yaml)" if kinds == (AUDIO_PRIOR,) else ""
        raise VQAudioError(f"{checkpoint.path}: holds {KIND_NAMES[checkpoint.kind]}, not {wanted}{hint}")
    model = build_model(checkpoint)
    if checkpoint.kind == "audio_vqvae":
        return _codec(checkpoint, model, device)
    if checkpoint.kind in IMAGE_MODELS:
        assert isinstance(checkpoint.metadata, ImageModelMetadata)
        return ImageModel(model.to(device), checkpoint.kind, checkpoint.recipe, checkpoint.metadata, checkpoint.path,
                          checkpoint.fingerprint, checkpoint.step)  # fmt: skip
    under = load(_vqvae_of(checkpoint, vqvae), device, kinds=("audio_vqvae",) if checkpoint.kind == AUDIO_PRIOR else IMAGE_MODELS)
    meta = checkpoint.metadata
    assert isinstance(meta, (CodePriorMetadata, ImagePriorMetadata))
    if under.fingerprint != meta.vqvae_fingerprint:
        raise VQAudioError(
            f"{under.checkpoint} is model {under.fingerprint}, but {checkpoint.path} was trained on the codes of model "
            f"{meta.vqvae_fingerprint}; pass --vqvae with that model's checkpoint"
        )
    if isinstance(under, Codec):
        assert isinstance(model, CodePrior) and isinstance(meta, CodePriorMetadata)
        return Prior(model.to(device), under, checkpoint.path, checkpoint.fingerprint, checkpoint.step, checkpoint.valid,
                     meta, checkpoint.recipe)  # fmt: skip
    assert isinstance(model, PixelCNNPrior) and isinstance(under, ImageModel) and isinstance(meta, ImagePriorMetadata)
    return ImagePrior(model.net.to(device), under, checkpoint.path, checkpoint.fingerprint, checkpoint.step, meta,
                      checkpoint.recipe)  # fmt: skip


def load_codec(path: str | Path, device: torch.device) -> Codec:
    """An audio VQ-VAE (a one-line error for any other kind)."""
    loaded = load(path, device, kinds=("audio_vqvae",))
    assert isinstance(loaded, Codec)
    return loaded


def load_prior(path: str | Path, device: torch.device, vqvae: str | Path | None = None) -> Prior:
    """A code prior over audio codes, with its VQ-VAE."""
    loaded = load(path, device, vqvae, kinds=(AUDIO_PRIOR,))
    assert isinstance(loaded, Prior)
    return loaded
