"""`vqaudio export`: every graph, run in onnxruntime (or loaded back as TorchScript), gives what
the PyTorch model gives, at two lengths and batch sizes; the manifest describes the graphs; the
command refuses to write into a non-empty folder without --force."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_dict

from vqaudio.data.demo import synthesize_utterance
from vqaudio.errors import VQAudioError
from vqaudio.formats.checkpoint import (
    model_fingerprint,
    read_checkpoint,
    save_checkpoint,
)
from vqaudio.formats.metadata import AudioVQVAEMetadata, ImageModelMetadata
from vqaudio.inference.export import export_model
from vqaudio.inference.load import Codec, load_codec
from vqaudio.models.build import build_audio_vqvae, build_image_model
from vqaudio.models.fsq import FiniteScalarQuantizer
from vqaudio.recipe import validate_recipe

ort = pytest.importorskip("onnxruntime", reason="vqaudio export's tests need the export extra: pip install -e '.[export]'")
pytest.importorskip("onnx", reason="vqaudio export's tests need the export extra: pip install -e '.[export]'")

CPU = torch.device("cpu")
RATE = 16000
CONV = {"kind": "conv", "channels": 16, "strides": [2, 4], "speaker_dim": 4, "min_channels": 4}
TOP = {"codebook_size": 8, "dim": 8, "downsample_layers": 1, "channels": 8}
WAVENET = tiny_dict()["model"]["decoder"]
MODELS = {
    "vq_wavenet": {},
    "vq_conv": {"decoder": CONV},
    "rvq3_conv": {"decoder": CONV, "quantizer": {"n_q": 3}},
    "fsq_conv": {"decoder": CONV, "quantizer": {"kind": "fsq", "levels": [2, 4, 4]}},
    "factorised_rvq2_wavenet": {"quantizer": {"code_dim": 4, "n_q": 2}},
    "mixture_wavenet": {"decoder": {**WAVENET, "output": "mol", "mixtures": 3, "pre_emphasis": 0.85}},
    "two_level_wavenet": {"top": TOP},
}
LENGTHS = [(1, 3), (2, 5)]  # (batch, top frames): two lengths and two batch sizes, neither the traced one


def recipe_for(name: str) -> dict:
    change = MODELS[name]
    data = tiny_dict()
    if "decoder" in change:
        data["model"]["decoder"] = dict(change["decoder"])
        if change["decoder"].get("kind") == "conv":
            data["train"]["loss"] = {"mel_windows": [64, 128, 256], "stft_ffts": [128, 256, 512]}
    data["model"]["quantizer"].update(change.get("quantizer", {}))
    if "top" in change:
        data["model"]["top"] = dict(change["top"])
    return data


def save_model(folder: Path, name: str) -> Path:
    """A tiny untrained model of kind `name`, its codebooks seeded from speech, saved as a checkpoint."""
    torch.manual_seed(0)
    recipe = validate_recipe(recipe_for(name), name)
    model = build_audio_vqvae(recipe.model, 2)
    model.train()
    with torch.no_grad():  # one pass in training mode seeds the codebooks from encoder outputs
        speech = torch.from_numpy(np.stack([synthesize_utterance(s, 100, 0.2, RATE)[:3072] for s in (0, 1)]))
        model(speech, torch.tensor([0, 1]))
        for level in model.quantizer.levels:  # untrained FSQ puts every frame on one grid point: spread them
            if isinstance(level, FiniteScalarQuantizer):
                level.project_in.weight.mul_(30.0)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    meta = AudioVQVAEMetadata(
        speakers=["demo0", "demo1"], sample_rate=RATE, hop=model.hop, codebook_size=model.codebook_size, n_q=model.n_q,
        ratio=model.ratio, top_codebook_size=model.top_codebook_size,
    )  # fmt: skip
    path = folder / name / "step_000001.pt"
    save_checkpoint(path, {"kind": "audio_vqvae", "recipe": recipe.to_dict(), "step": 1, "model": state,
                           "fingerprint": model_fingerprint(state), "metadata": meta.model_dump()})  # fmt: skip
    return path


def speech(codec: Codec, batch: int, top_frames: int) -> torch.Tensor:
    """`batch` stretches of demo speech (not the ones that seeded the codebooks), whole top frames long."""
    length = top_frames * codec.top_hop
    return torch.from_numpy(np.stack([synthesize_utterance(b % 2, b, 0.5, RATE)[1600 : 1600 + length] for b in range(batch)]))


def session(path: Path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def code_feed(codec: Codec, codes: torch.Tensor, top: torch.Tensor | None, speaker: torch.Tensor) -> dict[str, np.ndarray]:
    feed = {"codes": codes.numpy(), "speaker": speaker.numpy()}
    if top is not None:
        feed["top_codes"] = top.numpy()
    return feed


def teacher_forced(codec: Codec, audio: torch.Tensor, codes: torch.Tensor, top: torch.Tensor | None, speaker: torch.Tensor):
    """(the WaveNet's inputs [B, T], its logits [B, C, T] from the full forward pass on the conditioning
    that decoding uses, the per-frame bias [B, F, layers x gate]), all from PyTorch."""
    from vqaudio.audio.emphasis import pre_emphasis

    model = codec.model
    with torch.no_grad():
        targets = model.sample_classes(pre_emphasis(audio, model.pre_emphasis))
        inputs = F.pad(targets[:, :-1], (1, 0), value=model.silence)
        cond = model.latent_conditioning(codes, 0, codes.shape[-1], top)
        vector = model.speaker_vector(speaker)
        return inputs, model.decoder(inputs, cond, vector), model.decoder.frame_bias(cond, vector, codes.shape[0])


def run_steps(step, manifest: dict, inputs: np.ndarray, bias: np.ndarray, hop: int) -> np.ndarray:
    """Drive the step graph over `inputs` [B, T] from its initial state: logits [B, C, T]."""
    graph = manifest["graphs"]["step"]
    batch = inputs.shape[0]
    state = {s["input"]: np.zeros([batch, *s["shape"][1:]], dtype=np.float32) for s in graph["state"]}
    assert all(s["init"] == "zeros" for s in graph["state"])
    outputs = [o["name"] for o in graph["outputs"]]
    logits = []
    for t in range(inputs.shape[1]):
        result = dict(zip(outputs, step(inputs[:, t], bias[:, t // hop], state), strict=True))
        logits.append(result["logits"])
        state = {s["input"]: result[s["output"]] for s in graph["state"]}
    return np.stack(logits, axis=-1)


@pytest.mark.parametrize("name", list(MODELS))
def test_onnx_graphs_match_pytorch_at_two_lengths(name, tmp_path):
    checkpoint = save_model(tmp_path, name)
    result = export_model(checkpoint, tmp_path / "out", "onnx")
    codec = load_codec(checkpoint, CPU)
    model = codec.model
    manifest = json.loads(result.manifest.read_text())
    graphs = manifest["graphs"]
    encoder = session(result.out_dir / graphs["encoder"]["file"])
    seen: set[int] = set()
    for batch, top_frames in LENGTHS:
        audio = speech(codec, batch, top_frames)
        speaker = torch.arange(batch) % 2
        got = encoder.run(None, {"audio": audio.numpy()})
        codes, top = model.encode_levels(audio)
        assert got[0].dtype == np.int64 and np.array_equal(got[0], codes.numpy())
        assert (top is None and len(got) == 1) or np.array_equal(got[1], top.numpy())
        seen.update(np.unique(got[0]).tolist())
        if model.waveform_decoder:
            decoder = session(result.out_dir / graphs["decoder"]["file"])
            audio_out = decoder.run(None, code_feed(codec, codes, top, speaker))[0]
            with torch.no_grad():
                expected = model.decode_frames(codes, 0, codes.shape[-1], model.speaker_vector(speaker), top).clamp(-1, 1)
            assert audio_out.shape == (batch, codes.shape[-1] * codec.hop)
            assert np.abs(audio_out - expected.numpy()).max() < 1e-4
            continue
        inputs, logits, bias = teacher_forced(codec, audio, codes, top, speaker)
        conditioning = session(result.out_dir / graphs["conditioning"]["file"])
        got_bias = conditioning.run(None, code_feed(codec, codes, top, speaker))[0]
        assert got_bias.shape == tuple(bias.shape) and np.abs(got_bias - bias.numpy()).max() < 1e-4
        step = session(result.out_dir / graphs["step"]["file"])
        names = [i["name"] for i in graphs["step"]["inputs"]]

        def run(sample: np.ndarray, row: np.ndarray, state: dict[str, np.ndarray]) -> list[np.ndarray]:
            return step.run(None, {names[0]: sample, names[1]: row, **state})

        stepped = run_steps(run, manifest, inputs.numpy(), got_bias, codec.hop)
        assert stepped.shape == tuple(logits.shape)
        assert np.abs(stepped - logits.numpy()).max() < 1e-4
    assert len(seen) > 1  # the codes compared are not all one code


def test_the_manifest_describes_the_model_and_each_graph(tmp_path):
    checkpoint = save_model(tmp_path, "two_level_wavenet")
    result = export_model(checkpoint, tmp_path / "out")
    manifest = json.loads(result.manifest.read_text())
    assert manifest["format"] == "vqaudio-export" and manifest["version"] == 1 and manifest["graph_format"] == "onnx"
    assert manifest["fingerprint"] == read_checkpoint(checkpoint).fingerprint == result.fingerprint
    assert (manifest["sample_rate"], manifest["hop"], manifest["codebook_size"], manifest["n_q"]) == (RATE, 8, 32, 1)
    assert manifest["top"] == {"codebook_size": 8, "ratio": 2, "hop": 16} and manifest["decoder"] == "wavenet"
    assert sorted(manifest["graphs"]) == ["conditioning", "encoder", "step"]
    assert sorted(p.name for p in result.out_dir.iterdir()) == ["conditioning.onnx", "encoder.onnx", "manifest.json", "step.onnx"]
    assert [p.name for p in result.files] == ["encoder.onnx", "conditioning.onnx", "step.onnx", "manifest.json"]
    for graph in manifest["graphs"].values():  # the names, dtypes and free axes are the graph's own
        loaded = session(result.out_dir / graph["file"])
        for declared, actual in ((graph["inputs"], loaded.get_inputs()), (graph["outputs"], loaded.get_outputs())):
            assert [t["name"] for t in declared] == [a.name for a in actual]
            for spec, arg in zip(declared, actual, strict=True):
                assert arg.type == f"tensor({spec['dtype'].replace('float32', 'float')})"
                assert [d if isinstance(d, int) else "free" for d in spec["shape"]] == [d if isinstance(d, int) else "free" for d in arg.shape]
    step = manifest["graphs"]["step"]
    assert [s["input"] for s in step["state"]] == [f"history_{i}" for i in range(4)]
    assert [s["shape"] for s in step["state"]] == [["batch", d, 8] for d in (1, 2, 4, 8)]
    wavenet = manifest["wavenet"]
    assert wavenet["first_sample"] == 128 and wavenet["samples_per_bias_row"] == 8 and wavenet["output"] == "mulaw"
    assert manifest["graphs"]["encoder"]["inputs"][0]["shape"] == ["batch", "samples"]
    assert [t["name"] for t in manifest["graphs"]["conditioning"]["inputs"]] == ["codes", "top_codes", "speaker"]


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
@pytest.mark.parametrize("name", ["vq_wavenet", "rvq3_conv"])
def test_torchscript_graphs_load_back_and_match(name, tmp_path):
    checkpoint = save_model(tmp_path, name)
    result = export_model(checkpoint, tmp_path / "ts", "torchscript")
    manifest = json.loads(result.manifest.read_text())
    assert manifest["graph_format"] == "torchscript" and all(g["file"].endswith(".pt") for g in manifest["graphs"].values())
    codec = load_codec(checkpoint, CPU)
    model = codec.model
    graphs = {name: torch.jit.load(str(result.out_dir / g["file"])) for name, g in manifest["graphs"].items()}
    with torch.no_grad():
        for batch, top_frames in LENGTHS:
            audio = speech(codec, batch, top_frames)
            speaker = torch.arange(batch) % 2
            codes, _ = model.encode_levels(audio)
            assert torch.equal(graphs["encoder"](audio), codes)
            if model.waveform_decoder:
                expected = model.decode_frames(codes, 0, codes.shape[-1], model.speaker_vector(speaker)).clamp(-1, 1)
                assert (graphs["decoder"](codes, speaker) - expected).abs().max() < 1e-4
                continue
            inputs, logits, bias = teacher_forced(codec, audio, codes, None, speaker)
            assert (graphs["conditioning"](codes, speaker) - bias).abs().max() < 1e-4

            def run(sample: np.ndarray, row: np.ndarray, state: dict[str, np.ndarray]) -> list[np.ndarray]:
                names = [s["input"] for s in manifest["graphs"]["step"]["state"]]
                out = graphs["step"](torch.from_numpy(sample), torch.from_numpy(row), *(torch.from_numpy(state[n]) for n in names))
                return [t.numpy() for t in out]

            stepped = run_steps(run, manifest, inputs.numpy(), bias.numpy(), codec.hop)
            assert np.abs(stepped - logits.numpy()).max() < 1e-4


def test_the_command_writes_the_folder_and_will_not_overwrite_it_without_force(tmp_path, capsys):
    from vqaudio import cli

    checkpoint = save_model(tmp_path, "vq_conv")
    out = tmp_path / "exported"

    def main(*args: str) -> tuple[int, str, str]:
        import sys

        old, sys.argv = sys.argv, ["vqaudio", "export", *args]
        try:
            cli.main()
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
        finally:
            sys.argv = old
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    code, stdout, _ = main(str(checkpoint), str(out))
    assert code == 0
    assert [line.split()[-1] for line in stdout.splitlines()] == [str(out / n) for n in ("encoder.onnx", "decoder.onnx", "manifest.json")]
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    code, stdout, stderr = main(str(checkpoint.parent), str(out))  # a run folder stands for its newest checkpoint
    assert code == 2 and stdout == "" and len(stderr.strip().splitlines()) == 1
    assert "not empty" in stderr and "--force" in stderr
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before  # untouched
    (out / "notes.txt").write_text("mine")
    code, stdout, _ = main(str(checkpoint), str(out), "--force", "--format", "torchscript")
    assert code == 0 and "decoder.pt" in stdout
    # the earlier export's graphs make way for the new ones; a file it did not write stays
    assert sorted(p.name for p in out.iterdir()) == ["decoder.pt", "encoder.pt", "manifest.json", "notes.txt"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".exported.")]  # no staging folder left behind
    code, _, stderr = main(str(checkpoint), str(tmp_path / "other"), "--format", "tflite")
    assert code == 2 and "--format 'tflite': choose onnx or torchscript" in stderr and not (tmp_path / "other").exists()


def test_an_image_model_is_refused_in_one_line(tmp_path):
    recipe = validate_recipe({
        "name": "img", "data": {"kind": "cifar10", "root": str(tmp_path), "valid_images": 16},
        "model": {"kind": "image_vqvae", "image": {"hidden": 8, "residual_blocks": 1}, "quantizer": {"codebook_size": 16, "dim": 4}},
        "train": {"steps": 1, "batch_size": 2},
    }, "img")  # fmt: skip
    state = build_image_model(recipe.model).state_dict()
    path = tmp_path / "image.pt"
    meta = ImageModelMetadata(class_names=["a", "b"], image_shape=[32, 32, 3])
    save_checkpoint(path, {"kind": "image_vqvae", "recipe": recipe.to_dict(), "step": 1, "model": state,
                           "fingerprint": model_fingerprint(state), "metadata": meta.model_dump()})  # fmt: skip
    with pytest.raises(VQAudioError, match="holds an image VQ-VAE, not an audio VQ-VAE") as raised:
        export_model(path, tmp_path / "out")
    assert "\n" not in str(raised.value) and not (tmp_path / "out").exists()
