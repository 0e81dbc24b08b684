"""What a checkpoint records about its model, one typed record per model kind.

The file keeps a plain mapping under `metadata` (so the format is unchanged); reading validates it
into these records, which every module then uses by attribute. Unknown keys are kept, so that a
checkpoint written by a newer vqaudio still loads.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Level = Literal["top", "bottom"]


class _Metadata(BaseModel):
    model_config = ConfigDict(extra="allow")


class AudioVQVAEMetadata(_Metadata):
    speakers: list[str] = Field(min_length=1)
    speaker_info: dict[str, dict[str, str]] = {}
    sample_rate: int = Field(ge=1)
    hop: int = Field(ge=1)
    codebook_size: int = Field(ge=2)
    n_q: int = Field(1, ge=1)
    ratio: int = Field(1, ge=1)  # bottom frames per top frame (1: one level)
    top_codebook_size: int | None = None  # two-level models only
    train_utterances: int | None = None
    valid_ids: list[str] = []


class CodePriorMetadata(_Metadata):
    speakers: list[str] = Field(min_length=1)
    sample_rate: int = Field(ge=1)
    hop: int = Field(ge=1)  # samples per frame of the codes it models (the top hop for a top prior)
    codebook_size: int = Field(ge=2)
    n_q: int = Field(1, ge=1)
    level: Level | None = None  # None over a one-level VQ-VAE
    ratio: int = Field(1, ge=1)
    condition_codes: int = Field(0, ge=0)  # a bottom prior: the top codebook size it is conditioned on
    vqvae_checkpoint: str
    vqvae_fingerprint: str
    code_cache: str | None = None
    train_utterances: int | None = None
    valid_ids: list[str] = []


class ImageModelMetadata(_Metadata):
    class_names: list[str] = Field(min_length=1)
    image_shape: list[int] | None = None
    train_images: int | None = None
    valid_images: int | None = None


class ImagePriorMetadata(_Metadata):
    class_names: list[str] = Field(min_length=1)
    code_shape: list[int] = Field(min_length=2, max_length=2)
    level: Level | None = None
    condition_shape: list[int] | None = None  # a bottom prior: the top code maps it is conditioned on
    codebook_size: int = Field(ge=2)
    image_shape: list[int] | None = None
    vqvae_checkpoint: str
    vqvae_fingerprint: str
    valid_images: int | None = None


Metadata = AudioVQVAEMetadata | CodePriorMetadata | ImageModelMetadata | ImagePriorMetadata

METADATA: dict[str, type[_Metadata]] = {
    "audio_vqvae": AudioVQVAEMetadata,
    "code_prior": CodePriorMetadata,
    "image_vqvae": ImageModelMetadata,
    "image_vae": ImageModelMetadata,
    "image_vqvae2": ImageModelMetadata,
    "image_prior": ImagePriorMetadata,
}
