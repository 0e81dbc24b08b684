"""Every bad input gets one line naming the file and the problem, exit code 2, no traceback and no
output left behind; unusual but valid audio simply works; property-based tests on codes files and
the recipe loader."""

from __future__ import annotations

import json
import math
import string
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml
from bad_inputs import BAD_INPUTS, BadInput, valid_audio
from conftest import examples, run_main, tiny_dict
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from vqaudio.errors import VQAudioError
from vqaudio.formats.codes import read_codes
from vqaudio.inference.codec import write_codes
from vqaudio.inference.load import Codec, load_codec
from vqaudio.recipe import Recipe, load_recipe, validate_recipe


@pytest.mark.parametrize("case", BAD_INPUTS, ids=[case.name for case in BAD_INPUTS])
def test_bad_input_gets_one_line_and_exit_code_2(case: BadInput, trained, tmp_path, capsys):
    _, checkpoint = trained
    args = case.make(tmp_path, checkpoint)
    code, text = run_main(capsys, *args)
    lines = text.strip().splitlines()
    assert code == 2, text
    assert len(lines) == 1 and lines[0].startswith("error: "), text
    assert case.message in lines[0], lines[0]
    if case.output is not None:
        assert not (tmp_path / case.output).exists()
        assert not list(tmp_path.rglob("*.tmp"))  # no half-written temporary either
    assert not (tmp_path / "ran.txt").exists()  # no pickled code ran


def test_every_bad_input_names_the_file_it_is_about(trained, tmp_path, capsys):
    """Each message about a file names that file (so a batch job's log says which one failed)."""
    _, checkpoint = trained
    for index, case in enumerate(BAD_INPUTS):
        folder = tmp_path / str(index)
        folder.mkdir()
        args = case.make(folder, checkpoint)
        paths = [a for a in args if a.startswith(str(folder))]
        if not paths or case.name.startswith(("an override", "a recipe value", "--resume", "a data folder")):
            continue  # these name a key, an override or a folder inside the recipe instead
        _, text = run_main(capsys, *args)
        named = [Path(p).name for p in paths]
        assert any(name in text for name in named), (case.name, text)


@pytest.mark.parametrize("name, file_name, data", valid_audio(), ids=[v[0] for v in valid_audio()])
def test_unusual_but_valid_audio_encodes_and_decodes(name, file_name, data, trained, tmp_path, capsys):
    _, checkpoint = trained
    source = tmp_path / file_name
    source.write_bytes(data)
    info = sf.info(str(source))
    code, text = run_main(capsys, "encode", str(source), str(tmp_path / "c.npy"), "-c", str(checkpoint))
    assert code == 0, text
    codes, sidecar = read_codes(tmp_path / "c.npy")
    expected = info.frames * 8000 / info.samplerate
    assert abs(sidecar.num_samples - expected) <= 1
    assert codes.shape == (1, max(1, math.ceil(sidecar.num_samples / sidecar.hop)))
    code, text = run_main(capsys, "decode", str(tmp_path / "c.npy"), str(tmp_path / "o.wav"), "-c", str(checkpoint))
    assert code == 0, text
    audio, rate = sf.read(tmp_path / "o.wav")
    assert rate == 8000 and audio.shape == (sidecar.num_samples,)


# ----- property-based: codes files -----


@pytest.fixture(scope="module")
def codec(trained) -> Codec:
    return load_codec(trained[1], torch.device("cpu"))


INTEGER_DTYPES = [np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32, np.int64, np.uint64]


@settings(max_examples=examples(60), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(frames=st.integers(1, 300), data=st.data())
def test_any_codes_round_trip_through_the_file(codec, tmp_path_factory, frames, data):
    values = data.draw(st.lists(st.integers(0, codec.codebook_size - 1), min_size=frames, max_size=frames))
    codes = np.array([values])
    folder = tmp_path_factory.mktemp("codes")
    write_codes(codec, codes, folder / "c.npy", 0, frames * codec.hop, "test")
    back, sidecar = read_codes(folder / "c.npy")
    assert np.array_equal(back, codes) and sidecar.num_samples == frames * codec.hop


@settings(max_examples=examples(150), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    shape=st.lists(st.integers(0, 4), min_size=0, max_size=3),
    dtype=st.sampled_from([*INTEGER_DTYPES, np.float32, np.float16, np.bool_, np.complex64]),
    cut=st.one_of(st.none(), st.integers(0, 200)),
    flips=st.lists(st.tuples(st.integers(0, 300), st.integers(0, 255)), max_size=4),
)
def test_any_npy_file_reads_or_gives_a_one_line_error(codec, tmp_path_factory, shape, dtype, cut, flips):
    """Random shapes and dtypes, cut short or with bytes overwritten: read_codes either returns
    integer codes of one or two dimensions or raises a one-line VQAudioError, nothing else."""
    folder = tmp_path_factory.mktemp("fuzz")
    path = folder / "c.npy"
    np.save(path, np.zeros(shape, dtype=dtype))
    raw = bytearray(path.read_bytes())
    for position, value in flips:
        if position < len(raw):
            raw[position] = value
    path.write_bytes(bytes(raw[:cut] if cut is not None else raw))
    path.with_name("c.npy.json").write_text(json.dumps({
        "format": "vqaudio-codes", "version": 1, "fingerprint": codec.fingerprint, "sample_rate": 8000, "hop": 8,
        "codebook_size": 32, "n_q": 1, "num_samples": 8,
    }))  # fmt: skip
    try:
        codes, _ = read_codes(path)
    except VQAudioError as exc:
        assert "\n" not in str(exc) and "c.npy" in str(exc)
        return
    assert np.issubdtype(codes.dtype, np.integer) and codes.ndim == 2 and codes.size > 0


SIDECAR_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**40), 2**40), st.floats(allow_nan=True), st.text(max_size=8),
    st.lists(st.integers(), max_size=3),
)  # fmt: skip


@settings(max_examples=examples(150), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.sampled_from(["format", "version", "fingerprint", "sample_rate", "hop", "codebook_size", "n_q",
                            "num_samples", "speaker_index", "bitrate"]),  # fmt: skip
       value=SIDECAR_VALUES, drop=st.booleans())
@example(key="version", value="\n", drop=False)  # failed on a fresh clone: the message echoed the raw newline
@example(key="fingerprint", value="a\nb", drop=False)
def test_any_edited_sidecar_decodes_identically_or_is_refused(codec, tmp_path_factory, key, value, drop):
    from vqaudio.inference.codec import check_compatible

    folder = tmp_path_factory.mktemp("side")
    codes = np.arange(10)[None] % codec.codebook_size
    write_codes(codec, codes, folder / "c.npy", 0, 10 * codec.hop, "test")
    side_path = folder / "c.npy.json"
    sidecar = json.loads(side_path.read_text())
    original = dict(sidecar)
    if drop:
        sidecar.pop(key, None)
    else:
        sidecar[key] = value
    side_path.write_text(json.dumps(sidecar))
    try:
        back, read = read_codes(folder / "c.npy")
        check_compatible(codec, back, read, folder / "c.npy")
    except VQAudioError as exc:
        assert "\n" not in str(exc)
        return
    assert np.array_equal(back, codes)
    essential = ("fingerprint", "sample_rate", "hop", "codebook_size", "num_samples")
    assert all(getattr(read, k) == original[k] for k in essential)


# ----- property-based: the recipe loader -----

NAMES = st.text(alphabet=string.ascii_lowercase + "_", min_size=1, max_size=12)
YAML_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(10**6), 10**6), st.floats(allow_nan=False), st.text(max_size=10)),
    lambda children: st.one_of(st.lists(children, max_size=3), st.dictionaries(NAMES, children, max_size=3)),
    max_leaves=10,
)


@settings(max_examples=examples(150), deadline=None)
@given(section=st.sampled_from(["data", "model", "train", "prior", "name", "seed", "model.quantizer",
                                "model.decoder", "model.encoder", "data.demo"]),  # fmt: skip
       key=NAMES, value=YAML_VALUES)
def test_any_recipe_edit_validates_or_gives_a_one_line_error(section, key, value):
    data = tiny_dict()
    node = data
    for part in section.split("."):
        node = node.setdefault(part, {}) if isinstance(node.get(part, {}), dict) else node
    if isinstance(node, dict):
        node[key] = value
    try:
        recipe = validate_recipe(data, "r.yaml")
    except VQAudioError as exc:
        assert "\n" not in str(exc) and str(exc).startswith(("r.yaml", "override"))
        return
    assert isinstance(recipe, Recipe)
    assert validate_recipe(recipe.to_dict(), "again") == recipe  # a valid recipe survives its own dump


@settings(max_examples=examples(150), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=200))
def test_any_text_file_loads_as_a_recipe_or_gives_a_one_line_error(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("recipe") / "r.yaml"
    path.write_text(text)
    try:
        load_recipe(path)
    except VQAudioError as exc:
        assert "\n" not in str(exc) and "r.yaml" in str(exc)


@settings(max_examples=examples(80), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.integers(0, 400))
def test_a_recipe_cut_anywhere_loads_or_gives_a_one_line_error(tmp_path_factory, cut):
    text = yaml.safe_dump(tiny_dict())
    path = tmp_path_factory.mktemp("cut") / "r.yaml"
    path.write_text(text[:cut])
    try:
        load_recipe(path)
    except VQAudioError as exc:
        assert "\n" not in str(exc)
