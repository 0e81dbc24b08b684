"""`vqaudio export`: a trained audio VQ-VAE as standalone graphs (ONNX or TorchScript) and a manifest.

What is written (docs/export.md says how to run each graph):

- `encoder.onnx`: audio -> codes (the encoder and the quantiser);
- a conv decoder's `decoder.onnx`: codes -> audio;
- a WaveNet decoder's `conditioning.onnx` (codes -> every layer's input bias per code frame) and
  `step.onnx` (one sample: previous sample class + a bias row + per-layer histories -> logits
  + the histories one sample on), which a caller drives in a loop;
- `manifest.json`: the model's facts (sample rate, hop, K, n_q, fingerprint), each graph's inputs
  and outputs with symbolic axes and dtypes, the step's state and how to start it.

(`.pt` TorchScript files with `--format torchscript`.) Everything is written to a temporary
folder beside OUT_DIR and moved into place at the end; a non-empty OUT_DIR is only written
into with `force`. The checkpoint is read as every command reads one (`weights_only`, checked).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from vqaudio.errors import VQAudioError
from vqaudio.inference.export_graphs import (
    ConditioningGraph,
    ConvDecoderGraph,
    EncoderGraph,
    StepGraph,
    exportable,
)
from vqaudio.inference.load import Codec, load_codec, resolve_checkpoint
from vqaudio.models.audio_vqvae import AudioVQVAE
from vqaudio.models.wavenet import WaveNet

ExportFormat = Literal["onnx", "torchscript"]
FORMATS: dict[str, str] = {"onnx": ".onnx", "torchscript": ".pt"}
MANIFEST = "manifest.json"
MANIFEST_FORMAT = "vqaudio-export"
MANIFEST_VERSION = 1
ONNX_OPSET = 17  # onnxruntime 1.14 and later run it


@dataclass
class TensorSpec:
    """One input or output: its name, shape (ints, or the names of free axes) and dtype."""

    name: str
    shape: list[int | str]
    dtype: str
    description: str = ""


@dataclass
class StateSpec:
    """A recurrent tensor of the step graph: fed as `input`, returned as `output`, fed back next step."""

    input: str
    output: str
    shape: list[int | str]
    dtype: str
    init: str = "zeros"


@dataclass
class GraphSpec:
    """One graph file and its signature (inputs in the order a TorchScript module takes them)."""

    name: str
    file: str
    description: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    state: list[StateSpec] = field(default_factory=list)


@dataclass
class ExportResult:
    """What `export_model` wrote."""

    out_dir: Path
    format: str
    manifest: Path
    files: list[Path]  # the graph files, then the manifest, under out_dir
    fingerprint: str
    decoder: str  # "wavenet" or "conv"


# ----- the graphs and their signatures -----


def _code_inputs(model: AudioVQVAE) -> list[TensorSpec]:
    specs = [TensorSpec("codes", ["batch", model.n_q, "frames"], "int64", f"codes in 0..{model.codebook_size - 1}, every codebook")]
    if model.top is not None:
        top_k = model.top_codebook_size or 2
        specs.append(TensorSpec("top_codes", ["batch", 1, "top_frames"], "int64", f"top-level codes in 0..{top_k - 1}"))
    if model.speaker_embedding is not None:
        specs.append(TensorSpec("speaker", ["batch"], "int64", f"speaker index in 0..{model.num_speakers - 1}"))
    return specs


def _graphs(model: AudioVQVAE, suffix: str) -> list[tuple[GraphSpec, nn.Module, tuple[torch.Tensor, ...]]]:
    """Every graph of `model` with its signature, its module and example inputs to trace with."""
    batch, frames = 2, 4 * model.ratio
    codes = torch.zeros(batch, model.n_q, frames, dtype=torch.long)
    examples: list[torch.Tensor] = [codes]
    if model.top is not None:
        examples.append(torch.zeros(batch, 1, frames // model.ratio, dtype=torch.long))
    if model.speaker_embedding is not None:
        examples.append(torch.zeros(batch, dtype=torch.long))
    encoder_out = [TensorSpec("codes", ["batch", model.n_q, "frames"], "int64", "one code per codebook per frame")]
    if model.top is not None:
        encoder_out.append(TensorSpec("top_codes", ["batch", 1, "top_frames"], "int64", "the top level's codes"))
    encoder = GraphSpec(
        "encoder", f"encoder{suffix}", "audio -> codes (the encoder and the quantiser)",
        [TensorSpec("audio", ["batch", "samples"], "float32", f"mono audio in [-1, 1]; samples a multiple of {model.top_hop} (pad with zeros)")],
        encoder_out,
    )  # fmt: skip
    graphs: list[tuple[GraphSpec, nn.Module, tuple[torch.Tensor, ...]]] = [
        (encoder, EncoderGraph(model), (torch.zeros(batch, frames * model.hop),))
    ]
    if model.waveform_decoder:
        decoder = GraphSpec(
            "decoder", f"decoder{suffix}", "codes -> audio (the conv decoder, in one pass)", _code_inputs(model),
            [TensorSpec("audio", ["batch", "samples"], "float32", f"audio in [-1, 1], {model.hop} samples per frame")],
        )  # fmt: skip
        graphs.append((decoder, ConvDecoderGraph(model), tuple(examples)))
        return graphs
    net = model.decoder
    assert isinstance(net, WaveNet)
    width = len(net.dilations) * net.gate_channels
    conditioning = GraphSpec(
        "conditioning", f"conditioning{suffix}", "codes -> every WaveNet layer's input bias per code frame",
        _code_inputs(model),
        [TensorSpec("bias", ["batch", "frames", width], "float32", f"row f conditions samples f x {model.hop} .. (f + 1) x {model.hop} - 1")],
    )  # fmt: skip
    graphs.append((conditioning, ConditioningGraph(model), tuple(examples)))
    step = StepGraph(net)
    state = [
        StateSpec(f"history_{layer}", f"new_history_{layer}", ["batch", span, net.residual_channels], "float32")
        for layer, span in enumerate(step.spans)
    ]
    step_spec = GraphSpec(
        "step", f"step{suffix}", "one sample of the WaveNet: previous sample + a bias row + histories -> logits + histories",
        [
            TensorSpec("sample", ["batch"], "int64", f"the previous sample's class (before the first: {model.silence})"),
            TensorSpec("bias", ["batch", width], "float32", "row t // hop of the conditioning graph's bias"),
            *(TensorSpec(s.input, s.shape, s.dtype, f"layer {i}'s inputs at the last {s.shape[1]} samples, oldest first") for i, s in enumerate(state)),
        ],
        [
            TensorSpec("logits", ["batch", net.out_channels], "float32",
                       "mixture parameters (weights, means, log scales)" if net.mixtures else "unnormalised log-probabilities of the next class"),
            *(TensorSpec(s.output, s.shape, s.dtype, f"history_{i} one sample on: feed it back") for i, s in enumerate(state)),
        ],
        state,
    )  # fmt: skip
    step_examples = (torch.zeros(batch, dtype=torch.long), torch.zeros(batch, width), *step.initial_state(batch))
    graphs.append((step_spec, step, step_examples))
    return graphs


@contextlib.contextmanager
def _quiet_exporters() -> Iterator[None]:
    """The TorchScript tracer and the TorchScript-based ONNX exporter announce their deprecation
    at every call; say nothing of it to someone exporting a model."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        yield


def _write_onnx(spec: GraphSpec, module: nn.Module, examples: tuple[torch.Tensor, ...], path: Path) -> None:
    try:
        import onnx  # noqa: F401  (the exporter writes through it)
    except ImportError:
        raise VQAudioError("--format onnx needs the onnx package: pip install 'vqaudio[export]'") from None
    tensors = spec.inputs + spec.outputs
    axes = {t.name: {i: dim for i, dim in enumerate(t.shape) if isinstance(dim, str)} for t in tensors}
    with _quiet_exporters(), torch.no_grad():
        torch.onnx.export(
            module, examples, str(path), dynamo=False, opset_version=ONNX_OPSET, do_constant_folding=True,
            input_names=[t.name for t in spec.inputs], output_names=[t.name for t in spec.outputs],
            dynamic_axes={name: dims for name, dims in axes.items() if dims},
        )  # fmt: skip


def _write_torchscript(module: nn.Module, examples: tuple[torch.Tensor, ...], path: Path) -> None:
    with _quiet_exporters(), torch.no_grad():
        traced = torch.jit.trace(module, examples, check_trace=False)
        torch.jit.save(traced, str(path))


# ----- the manifest -----


def _manifest(codec: Codec, model: AudioVQVAE, graph_format: str, specs: list[GraphSpec]) -> dict[str, Any]:
    axes = {
        "batch": "sequences at once (any number from 1)",
        "frames": "code frames",
        "samples": f"frames x {model.hop} (the hop)",
    }
    if model.top is not None:
        axes["top_frames"] = f"frames / {model.ratio} (the top level's ratio)"
    manifest: dict[str, Any] = {
        "format": MANIFEST_FORMAT,
        "version": MANIFEST_VERSION,
        "graph_format": graph_format,
        "opset": ONNX_OPSET if graph_format == "onnx" else None,
        "torch": torch.__version__,
        "fingerprint": codec.fingerprint,
        "checkpoint": {"file": codec.checkpoint.name, "step": codec.step, "fingerprint": codec.fingerprint},
        "sample_rate": codec.sample_rate,
        "hop": model.hop,
        "codebook_size": model.codebook_size,
        "n_q": model.n_q,
        "bitrate": codec.bitrate(),
        "top": None if model.top is None else {"codebook_size": model.top_codebook_size, "ratio": model.ratio, "hop": model.top_hop},
        "speakers": list(codec.speakers),
        "decoder": "conv" if model.waveform_decoder else "wavenet",
        "axes": axes,
        "graphs": {spec.name: _graph_entry(spec) for spec in specs},
    }
    if not model.waveform_decoder:
        net = model.decoder
        assert isinstance(net, WaveNet)
        manifest["wavenet"] = {
            "output": "mixture_of_logistics" if net.mixtures else "mulaw",
            "classes": net.num_classes,
            "mixtures": net.mixtures,
            "first_sample": model.silence,
            "samples_per_bias_row": model.hop,
            "pre_emphasis": model.pre_emphasis,
            "layers": len(net.dilations),
            "gate_channels": net.gate_channels,
            "residual_channels": net.residual_channels,
            "dilations": list(net.dilations),
            "kernel_size": net.kernel_size,
            "receptive_field": net.receptive_field,
        }
    return manifest


def _graph_entry(spec: GraphSpec) -> dict[str, Any]:
    entry = asdict(spec)
    del entry["name"]
    if not spec.state:
        del entry["state"]
    return entry


# ----- the output folder -----


def _check_out_dir(out_dir: Path, force: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise VQAudioError(f"{out_dir}: is a file; give a folder for the exported graphs")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not force:
        raise VQAudioError(f"{out_dir}: already exists and is not empty; pass --force to write into it")


def _previous_files(out_dir: Path) -> set[str]:
    """The graph files an earlier export's manifest in `out_dir` names (plain file names only)."""
    try:
        old = json.loads((out_dir / MANIFEST).read_text())
        names = {str(g["file"]) for g in old["graphs"].values()} if old.get("format") == MANIFEST_FORMAT else set()
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return set()
    return {n for n in names if n and Path(n).name == n and n not in (".", "..")}


def _move_into_place(staging: Path, out_dir: Path, names: list[str]) -> None:
    """Rename the staged files into `out_dir`: the folder itself when `out_dir` is new or empty;
    else file by file, the manifest last, and an earlier export's graphs that this one does not
    write are removed (nothing else in the folder is touched)."""
    if out_dir.is_dir() and not any(out_dir.iterdir()):
        out_dir.rmdir()
    if not out_dir.exists():
        os.replace(staging, out_dir)
        return
    stale = _previous_files(out_dir) - set(names)
    for name in names:  # the manifest is the last name
        os.replace(staging / name, out_dir / name)
    for name in stale:
        (out_dir / name).unlink(missing_ok=True)
    shutil.rmtree(staging, ignore_errors=True)


# ----- the one entry point -----


def export_model(checkpoint_path: str | Path, out_dir: str | Path, format: str = "onnx", force: bool = False) -> ExportResult:
    """Write the graphs of the audio VQ-VAE at `checkpoint_path` (a checkpoint or a run folder)
    and their manifest into `out_dir` (see the module's docstring)."""
    if format not in FORMATS:
        raise VQAudioError(f"--format {format!r}: choose {' or '.join(FORMATS)}")
    out_dir = Path(out_dir).expanduser()
    _check_out_dir(out_dir, force)
    codec = load_codec(resolve_checkpoint(checkpoint_path), torch.device("cpu"))
    model = exportable(codec.model)
    graphs = _graphs(model, FORMATS[format])
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(staging, 0o777 & ~umask)  # mkdtemp makes 0700; give the folder the permissions mkdir would
    try:
        for spec, module, examples in graphs:
            module.eval()
            if format == "onnx":
                _write_onnx(spec, module, examples, staging / spec.file)
            else:
                _write_torchscript(module, examples, staging / spec.file)
        manifest = _manifest(codec, model, format, [spec for spec, _, _ in graphs])
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        names = [spec.file for spec, _, _ in graphs] + [MANIFEST]
        _check_out_dir(out_dir, force)  # nothing appeared there meanwhile
        _move_into_place(staging, out_dir, names)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return ExportResult(
        out_dir, format, out_dir / MANIFEST, [out_dir / name for name in names], codec.fingerprint,
        "conv" if model.waveform_decoder else "wavenet",
    )  # fmt: skip
