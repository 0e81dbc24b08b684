"""The .vqa bitstream: exact round trips, size close to the prior's estimate, clear errors on bad files."""

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from vqaudio.errors import VQAudioError
from vqaudio.formats.metadata import CodePriorMetadata
from vqaudio.formats.vqa import HEADER_SIZE, is_vqa, parse_vqa
from vqaudio.inference.entropy import entropy_decode, entropy_encode
from vqaudio.inference.load import Prior
from vqaudio.models.code_prior import CodePrior

K = 32


def prior_metadata(codebook_size: int, n_q: int, level: str | None = None) -> CodePriorMetadata:
    return CodePriorMetadata(speakers=["a", "b"], sample_rate=8000, hop=8, codebook_size=codebook_size, n_q=n_q, level=level,
                             vqvae_checkpoint="vq.pt", vqvae_fingerprint="v" * 16)  # fmt: skip


def tiny_prior(n_q: int, fingerprint: str = "p" * 16) -> Prior:
    torch.manual_seed(3)
    model = CodePrior(K, n_q, num_speakers=2, layers=4, stacks=1, residual_channels=8, gate_channels=16,
                      skip_channels=16, speaker_dim=4).eval()
    with torch.no_grad():  # a peaked, input-dependent distribution, so that coding saves bits
        for p in model.parameters():
            p.add_(0.5 * torch.randn_like(p))
    codec = SimpleNamespace(fingerprint="v" * 16, sample_rate=8000, hop=8, codebook_size=K, n_q=n_q, two_level=False, ratio=1,
                            speakers=["a", "b"])
    return Prior(model, codec, Path("prior.pt"), fingerprint, 10, {}, prior_metadata(K, n_q), None)


def likely_codes(prior: Prior, frames: int, seed: int) -> np.ndarray:
    """Codes drawn from the prior itself, so that their cost is about its entropy."""
    from vqaudio.generation.code_prior import sample_codes

    g = torch.Generator().manual_seed(seed)
    return sample_codes(prior.model, frames, torch.tensor([1]), generator=g)[0].numpy()


@pytest.mark.parametrize("n_q, frames, seed", [(1, 1, 0), (1, 37, 1), (1, 400, 2), (2, 150, 3), (3, 64, 4)])
def test_round_trip_is_exact(n_q, frames, seed):
    prior = tiny_prior(n_q)
    codes = likely_codes(prior, frames, seed)
    encoded = entropy_encode(prior, codes, 1, frames * 8 - 3)
    decoded, header = entropy_decode(prior, encoded.data, Path("x.vqa"))
    np.testing.assert_array_equal(decoded, codes)
    assert (header.speaker_index, header.num_samples, header.frames, header.n_q) == (1, frames * 8 - 3, frames, n_q)


def test_uniformly_random_codes_also_round_trip():
    prior = tiny_prior(2)
    codes = np.random.default_rng(0).integers(0, K, (2, 200))
    decoded, _ = entropy_decode(prior, entropy_encode(prior, codes, 0, 1600).data, Path("x.vqa"))
    np.testing.assert_array_equal(decoded, codes)


@pytest.mark.parametrize("n_q", [1, 2])
def test_size_is_within_one_percent_of_the_prior_estimate_plus_header(n_q):
    prior = tiny_prior(n_q)
    codes = likely_codes(prior, 600, 7)
    encoded = entropy_encode(prior, codes, 1, 4800)
    payload_bits = 8 * (len(encoded.data) - HEADER_SIZE)
    assert payload_bits <= 1.01 * encoded.estimated_bits + 64  # + the coder's final 64-bit flush
    assert payload_bits >= encoded.estimated_bits - 64
    # The prior really compresses these codes: fewer bits than log2 K per code.
    assert encoded.estimated_bits < 0.9 * codes.size * np.log2(K)
    # The estimate is the teacher-forced NLL of the same codes.
    lp = prior.model.log_probs(torch.as_tensor(codes)[None], torch.tensor([1]))
    nll_bits = -lp.gather(2, torch.as_tensor(codes.T.reshape(1, -1, 1))).sum().item() / np.log(2)
    assert encoded.estimated_bits == pytest.approx(nll_bits, rel=1e-4)


@pytest.fixture
def good_file() -> tuple[Prior, bytes]:
    prior = tiny_prior(1)
    return prior, entropy_encode(prior, likely_codes(prior, 80, 9), 0, 640).data


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda d: d[:50], "truncated .vqa file (50 bytes"),
        (lambda d: d[:-4], "truncated: the header promises"),
        (lambda d: d + b"xx", "has trailing bytes"),
        (lambda d: b"RIFF" + d[4:], "not a vqaudio .vqa file"),
        (lambda d: d[:30] + bytes([d[30] ^ 1]) + d[31:], "header is corrupt"),
        (lambda d: d[:8] + b"\x09\x00" + d[10:], "format version 9 is not supported"),
        (lambda d: d[:HEADER_SIZE] + bytes(len(d) - HEADER_SIZE), "corrupt"),
    ],
)
def test_damaged_files_give_a_clear_error(good_file, damage, message):
    prior, data = good_file
    with pytest.raises(VQAudioError, match="x.vqa") as info:
        entropy_decode(prior, damage(data), Path("x.vqa"))
    assert message in str(info.value)


def test_flipped_payload_bits_are_caught(good_file):
    prior, data = good_file
    original, _ = entropy_decode(prior, data, Path("x.vqa"))
    caught = harmless = 0
    for position in range(HEADER_SIZE, len(data)):
        damaged = data[:position] + bytes([data[position] ^ 0x10]) + data[position + 1 :]
        try:
            decoded, _ = entropy_decode(prior, damaged, Path("x.vqa"))
        except VQAudioError:
            caught += 1
        else:
            # A flip in the coder's last word may land in bits the decoder never reads: the codes
            # are then exactly the original ones. Anything else would be silent garbage.
            assert np.array_equal(decoded, original), f"flip at byte {position} decoded to other codes"
            assert position >= len(data) - 4
            harmless += 1
    assert caught + harmless == len(data) - HEADER_SIZE and harmless <= 4


def test_a_file_from_another_prior_is_refused(good_file, tmp_path):
    _, data = good_file
    with pytest.raises(VQAudioError, match="coded with prior 'pppppppppppppppp'"):
        entropy_decode(tiny_prior(1, fingerprint="q" * 16), data, Path("x.vqa"))
    path = tmp_path / "f.vqa"
    path.write_bytes(data)
    assert is_vqa(path) and not is_vqa(tmp_path / "missing.vqa")
    header, payload = parse_vqa(data, path)
    assert payload.dtype == np.dtype("<u4") and len(data) == HEADER_SIZE + 4 * payload.size


def test_an_absurd_length_is_refused_before_allocating(good_file):
    import struct
    import zlib

    from vqaudio.formats.vqa import _LAYOUT

    prior, data = good_file
    fields = list(_LAYOUT.unpack(data[: _LAYOUT.size]))
    fields[10], fields[11] = 8 * 2**40, 2**40  # samples, frames: years of audio
    body = _LAYOUT.pack(*fields)
    forged = body + struct.pack("<I", zlib.crc32(body)) + data[HEADER_SIZE:]
    with pytest.raises(VQAudioError, match="claims 8796093022208 samples"):
        entropy_decode(prior, forged, Path("x.vqa"))


# ----- version 2: a two-level model's codes under its top and bottom priors -----

RATIO, TOP_K = 4, 8


def two_level_priors() -> tuple[Prior, Prior]:
    torch.manual_seed(5)
    shape = {"layers": 4, "stacks": 1, "residual_channels": 8, "gate_channels": 16, "skip_channels": 16, "speaker_dim": 4}
    top = CodePrior(TOP_K, 1, num_speakers=2, **shape).eval()
    bottom = CodePrior(K, 1, num_speakers=2, condition_codes=TOP_K, condition_ratio=RATIO, condition_blocks=1, **shape).eval()
    with torch.no_grad():
        for p in [*top.parameters(), *bottom.parameters()]:
            p.add_(0.5 * torch.randn_like(p))
    codec = SimpleNamespace(fingerprint="v" * 16, sample_rate=8000, hop=8, codebook_size=K, n_q=1, two_level=True,
                            ratio=RATIO, speakers=["a", "b"], checkpoint=Path("vq.pt"))  # fmt: skip
    return (Prior(top, codec, Path("top.pt"), "t" * 16, 10, {}, prior_metadata(TOP_K, 1, "top"), None),
            Prior(bottom, codec, Path("bottom.pt"), "b" * 16, 10, {}, prior_metadata(K, 1, "bottom"), None))  # fmt: skip


def test_two_level_codes_round_trip_in_version_2_files():
    from vqaudio.formats.vqa import HEADER_SIZE_LEVELS
    from vqaudio.generation.code_prior import sample_codes
    from vqaudio.inference.entropy import entropy_decode_levels

    top_prior, bottom_prior = two_level_priors()
    g = torch.Generator().manual_seed(1)
    top = sample_codes(top_prior.model, 30, torch.tensor([1]), generator=g)
    codes = sample_codes(bottom_prior.model, 120, torch.tensor([1]), generator=g, top=top)[0].numpy()
    top = top[0].numpy()
    encoded = entropy_encode(top_prior, codes, 1, 120 * 8 - 20, top=top, bottom_prior=bottom_prior)
    decoded, decoded_top, header = entropy_decode_levels(top_prior, encoded.data, Path("x.vqa"), bottom_prior=bottom_prior)
    np.testing.assert_array_equal(decoded, codes)
    np.testing.assert_array_equal(decoded_top, top)
    assert header.two_level and (header.ratio, header.top_codebook_size, header.top_frames) == (RATIO, TOP_K, 30)
    assert header.bottom_prior_fingerprint == "b" * 16 and encoded.data[8] == 2  # format version 2
    # the estimate is both levels' teacher-forced NLL, and the file is close to it
    top_lp = top_prior.model.log_probs(torch.as_tensor(top)[None], torch.tensor([1]))
    bottom_lp = bottom_prior.model.log_probs(torch.as_tensor(codes)[None], torch.tensor([1]), torch.as_tensor(top)[None])
    nll = -(top_lp.gather(2, torch.as_tensor(top.T.reshape(1, -1, 1))).sum() + bottom_lp.gather(
        2, torch.as_tensor(codes.T.reshape(1, -1, 1))).sum()).item() / np.log(2)  # fmt: skip
    assert encoded.estimated_bits == pytest.approx(nll, rel=1e-4)
    assert 8 * (len(encoded.data) - HEADER_SIZE_LEVELS) <= 1.01 * encoded.estimated_bits + 64
    # the wrong bottom prior, a missing one, and a one-level reader are refused; so is damage
    other = Prior(bottom_prior.model, bottom_prior.codec, Path("o.pt"), "o" * 16, 1, {}, prior_metadata(K, 1, "bottom"), None)
    with pytest.raises(VQAudioError, match="coded with bottom prior 'bbbbbbbbbbbbbbbb'"):
        entropy_decode_levels(top_prior, encoded.data, Path("x.vqa"), bottom_prior=other)
    with pytest.raises(VQAudioError, match="a top prior; two-level codes are coded with its bottom prior too"):
        entropy_decode_levels(top_prior, encoded.data, Path("x.vqa"))
    with pytest.raises(VQAudioError, match="coded with prior 'tttttttttttttttt', but bottom.pt"):
        entropy_decode_levels(bottom_prior, encoded.data, Path("x.vqa"), bottom_prior=bottom_prior)
    with pytest.raises(VQAudioError, match="a bottom prior; give the top prior"):
        entropy_encode(bottom_prior, codes, 1, 960, top=top, bottom_prior=bottom_prior)
    for position in (40, 110, HEADER_SIZE_LEVELS + 3):
        damaged = bytearray(encoded.data)
        damaged[position] ^= 0x20
        with pytest.raises(VQAudioError, match="corrupt|checksum"):
            entropy_decode_levels(top_prior, bytes(damaged), Path("x.vqa"), bottom_prior=bottom_prior)
