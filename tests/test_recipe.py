import pytest
import yaml
from conftest import examples, tiny_dict
from hypothesis import given, settings
from hypothesis import strategies as st

from vqaudio.errors import VQAudioError
from vqaudio.recipe import apply_overrides, dump_recipe, load_recipe, validate_recipe


def write(tmp_path, data, name="r.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


def test_every_shipped_recipe_is_valid():
    from pathlib import Path

    recipes = sorted((Path(__file__).parents[1] / "recipes").glob("*.yaml"))
    assert {p.stem for p in recipes} >= {"demo", "vctk"}
    for path in recipes:
        assert load_recipe(path).name == path.stem


def test_paper_recipe_follows_the_paper():
    from pathlib import Path

    r = load_recipe(Path(__file__).parents[1] / "recipes" / "vctk.yaml")
    assert r.data.sample_rate == 16000
    assert r.model.encoder.downsample_layers == 6 and r.model.encoder.kernel_size == 4 and r.hop == 64
    assert r.model.quantizer.codebook_size == 512 and r.model.quantizer.beta == 0.25
    assert r.model.decoder.speaker_dim > 0 and r.model.decoder.quantization_channels == 256


def test_misspelled_key_names_key_file_and_suggestion(tmp_path):
    data = tiny_dict()
    data["train"]["bach_size"] = data["train"].pop("batch_size")
    path = write(tmp_path, data)
    with pytest.raises(VQAudioError) as info:
        load_recipe(path)
    message = str(info.value)
    assert str(path) in message and "train.bach_size" in message and "train.batch_size" in message
    assert "\n" not in message


def test_wrong_type_names_the_key(tmp_path):
    path = write(tmp_path, tiny_dict(train={"steps": "many"}))
    with pytest.raises(VQAudioError, match=r"train\.steps.*integer"):
        load_recipe(path)


def test_missing_required_value(tmp_path):
    data = tiny_dict()
    del data["train"]["steps"]
    with pytest.raises(VQAudioError, match=r"missing required key 'train\.steps'"):
        load_recipe(write(tmp_path, data))


def test_real_corpus_needs_a_root(tmp_path):
    with pytest.raises(VQAudioError, match=r"data\.root is required"):
        load_recipe(write(tmp_path, tiny_dict(data={"kind": "vctk"})))


def test_crop_must_fit_the_hop(tmp_path):
    with pytest.raises(VQAudioError, match="multiple of the hop"):
        load_recipe(write(tmp_path, tiny_dict(data={"crop_samples": 500})))


def test_overrides_are_typed_and_nested(tmp_path):
    path = write(tmp_path, tiny_dict())
    r = load_recipe(path, ["train.batch_size=8", "data.root=/data/VCTK-Corpus-0.92", "data.kind=vctk", "train.lr=1e-3"])
    assert r.train.batch_size == 8 and r.data.root == "/data/VCTK-Corpus-0.92" and r.train.lr == 1e-3


def test_override_with_unknown_key_blames_the_override(tmp_path):
    with pytest.raises(VQAudioError, match=r"^override train\.stepz: unknown key"):
        load_recipe(write(tmp_path, tiny_dict()), ["train.stepz=3"])


def test_override_without_equals_sign(tmp_path):
    with pytest.raises(VQAudioError, match="expected KEY=VALUE"):
        load_recipe(write(tmp_path, tiny_dict()), ["train.steps"])


def test_malformed_yaml_and_missing_file(tmp_path):
    with pytest.raises(VQAudioError, match="not valid YAML at line"):
        load_recipe(write(tmp_path, "name: x\n  bad: [1,\n"))
    with pytest.raises(VQAudioError, match="no such recipe file"):
        load_recipe(tmp_path / "nope.yaml")


def test_dumped_recipe_reloads_identically(tmp_path):
    r = validate_recipe(tiny_dict(), "tiny")
    again = load_recipe(write(tmp_path, dump_recipe(r)))
    assert again == r


@settings(max_examples=examples(60), deadline=None)
@given(
    key=st.text(alphabet="abcdefghijklmnopqrstuvwxyz_.", min_size=1, max_size=20),
    value=st.one_of(st.integers(), st.floats(allow_nan=False), st.text(max_size=10), st.booleans()),
)
def test_any_override_either_validates_or_gives_a_one_line_error(key, value):
    try:
        data, _ = apply_overrides(tiny_dict(), [f"{key}={value}"])
        validate_recipe(data, "tiny.yaml", {key})
    except VQAudioError as exc:
        assert "\n" not in str(exc)


@pytest.mark.parametrize(
    "recipe, message",
    [
        ({"model": {"kind": "code_prior"}}, "model.kind code_prior needs a prior section with prior.vqvae"),
        ({"model": {"kind": "code_prior"}, "prior": {"vqvea": "runs/x"}}, "unknown key 'prior.vqvea' (did you mean 'prior.vqvae'?)"),
        ({"model": {"kind": "code_prior"}, "prior": {"vqvae": "r", "layers": 5, "stacks": 2}}, "prior.layers must be a multiple of prior.stacks"),
        ({"model": {"kind": "code_prior"}, "prior": {"vqvae": "r"}, "data": {"kind": "demo"}}, "remove the data section"),
        ({"prior": {"vqvae": "r"}}, "the prior section belongs to model.kind code_prior or image_prior recipes"),
    ],
)
def test_prior_recipe_errors_name_the_key(recipe, message):
    with pytest.raises(VQAudioError, match="p.yaml") as info:
        validate_recipe({"name": "p", "train": {"steps": 1, "batch_size": 1}, **recipe}, "p.yaml")
    assert message in str(info.value)


def test_a_prior_recipe_round_trips_without_a_data_section():
    recipe = validate_recipe({"name": "p", "model": {"kind": "code_prior"}, "prior": {"vqvae": "newest"},
                              "train": {"steps": 1, "batch_size": 1}}, "p.yaml")
    dumped = recipe.to_dict()
    assert "data" not in dumped and dumped["prior"]["vqvae"] == "newest"
    assert validate_recipe(dumped, "again").to_dict() == dumped


@pytest.mark.parametrize(
    "recipe, message",
    [
        ({"model": {"kind": "image_vqvae", "decoder": {"layers": 4}}, "data": {"kind": "cifar10", "root": "c"}},
         "unknown key 'model.decoder' (model.decoder belongs to model.kind audio_vqvae)"),
        ({"model": {"kind": "audio_vqvae", "image": {"hidden": 8}}}, "unknown key 'model.image' (model.image belongs to model.kind image_vqvae"),
        ({"model": {"kind": "code_prior"}, "prior": {"vqvae": "r", "attention_every": 2}}, "unknown key 'prior.attention_every'"),
        ({"model": {"kind": "image_prior"}, "prior": {"vqvae": "r", "kernel_size": 3, "crop_frames": 64}}, "unknown key 'prior.crop_frames'"),
        ({"model": {"kind": "image_prior"}, "prior": {"vqvae": "r", "kernel_size": 4}}, "prior.kernel_size must be odd"),
        ({"model": {"kind": "wavenet"}}, "model.kind 'wavenet' is not one of audio_vqvae, code_prior"),
    ],
)
def test_each_model_kind_has_only_its_own_sections(recipe, message):
    with pytest.raises(VQAudioError) as info:
        validate_recipe({"name": "p", "train": {"steps": 1, "batch_size": 1}, **recipe}, "p.yaml")
    assert message in str(info.value)


def test_a_recipe_saved_with_every_familys_sections_still_loads():
    """Before each model kind had its own schema, checkpoints and run folders saved every section
    with its defaults: those load (the foreign sections are dropped), a user's recipe does not."""
    old = {
        "name": "img", "seed": 0, "data": {"kind": "cifar10", "root": "c"}, "train": {"steps": 1, "batch_size": 1},
        "model": {"kind": "image_vqvae", "encoder": {"channels": 128}, "quantizer": {"codebook_size": 64},
                  "decoder": {"layers": 20}, "image": {"hidden": 32}, "top": None},
    }  # fmt: skip
    recipe = validate_recipe(old, "checkpoint (embedded recipe)", saved=True)
    assert recipe.model.quantizer.codebook_size == 64 and recipe.model.image.hidden == 32
    assert "decoder" not in recipe.to_dict()["model"]
    with pytest.raises(VQAudioError, match="unknown key 'model.encoder' .model.encoder belongs to model.kind audio_vqvae"):
        validate_recipe(old, "user.yaml")
    prior = {"name": "p", "train": {"steps": 1, "batch_size": 1}, "model": {"kind": "image_prior", "decoder": {}},
             "prior": {"vqvae": "r", "kernel_size": 5, "gate_channels": 128, "crop_frames": 256, "heads": 2}}  # fmt: skip
    assert validate_recipe(prior, "saved", saved=True).prior.heads == 2
