"""The GPU: CUDA-graph generation against the plain loop, and scripts/bench_gpu.py.

Tests marked `cuda` need a CUDA GPU and are skipped, with the reason, where there is none (a hook
in conftest.py); run them on a GPU machine with `pytest -m cuda` (docs/gpu.md). They have never
run in this project. The other tests here run on the CPU: bench_gpu.py without a GPU, and the
parts of bench_gpu.py that do not need one.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from conftest import tiny_dict
from test_generation import conditioning, make_net
from test_mixture import mixture_net

from vqaudio.generation import engine
from vqaudio.generation.cuda_graph import CudaGraphBackend
from vqaudio.generation.engine import generate
from vqaudio.models import mixture
from vqaudio.models.wavenet import WaveNet
from vqaudio.recipe import load_recipe, validate_recipe

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_gpu.py"
CPU = torch.device("cpu")


def load_bench():
    """scripts/bench_gpu.py as a module (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location("bench_gpu", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bench = load_bench()


def on(device, *tensors):
    return [t.to(device) if t is not None else None for t in tensors]


def teacher_forced(net: WaveNet, classes: torch.Tensor, c, g, first_input: int = 0) -> torch.Tensor:
    """The teacher-forced logits [B, T, classes] on the net's device, returned on the CPU."""
    inputs = torch.cat([torch.full((classes.shape[0], 1), first_input), classes[:, :-1]], dim=1)
    with torch.no_grad():
        return net(inputs.to(net.device), c, g).transpose(1, 2).cpu()


def both_backends(net: WaveNet, length: int, batch: int, c, g, temperature: float, first_input: int = 0):
    """plain and cuda-graph runs under one seed; the CUDA graph must really run (no fallback warning)."""
    runs = {}
    for backend in ("plain", "cuda-graph"):
        gen = torch.Generator(device=net.device).manual_seed(5)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            runs[backend] = generate(net, length, batch, c, g, first_input=first_input, temperature=temperature,
                                     generator=gen, backend=backend, record_logits=True)  # fmt: skip
        assert runs[backend].backend == backend
    return runs["plain"], runs["cuda-graph"]


# ----- on a GPU -----


@pytest.mark.cuda
@pytest.mark.parametrize("temperature", [0.0, 1.0, 0.7])
@pytest.mark.parametrize("kernel_size", [2, 3])
@pytest.mark.parametrize("cond,speaker", [(True, True), (True, False), (False, True)])
def test_cuda_graph_generation_equals_the_plain_loop_on_the_gpu(monkeypatch, temperature, kernel_size, cond, speaker):
    """1024 steps (two engine blocks) x 3 sequences: equal classes, logits within 1e-4 of each
    other and of the teacher-forced pass (cuDNN's TF32 off, so the full pass is fp32 too)."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    net = make_net(kernel_size, cond, speaker).to("cuda")
    c, g = on("cuda", *conditioning(net, 3, 1024))
    plain, graph = both_backends(net, 1024, 3, c, g, temperature)
    assert torch.equal(plain.classes, graph.classes)
    assert (plain.logits - graph.logits).abs().max().item() <= 1e-4
    assert (graph.logits - teacher_forced(net, graph.classes, c, g)).abs().max().item() <= 1e-4


@pytest.mark.cuda
@pytest.mark.parametrize("temperature", [0.0, 1.0, 0.7])
def test_cuda_graph_generation_of_a_mixture_output_equals_the_plain_loop_on_the_gpu(temperature):
    """The captured mixture sampling, and its greedy choice selected on the device."""
    net = mixture_net().to("cuda")
    c, g = on("cuda", *conditioning(net, 3, 1024))
    plain, graph = both_backends(net, 1024, 3, c, g, temperature, first_input=mixture.SILENCE)
    assert torch.equal(plain.classes, graph.classes)
    assert (plain.logits - graph.logits).abs().max().item() <= 1e-4


@pytest.mark.cuda
def test_the_reference_decoder_is_exact_under_cuda_graphs_as_bench_gpu_measures_it():
    net = bench.reference_decoder().to("cuda")
    compared = bench.compare_backends(net, torch.device("cuda"))
    assert compared["exact"], compared


@pytest.mark.cuda
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs")
def test_cuda_graph_generation_on_a_gpu_other_than_the_current_one():
    """A model on cuda:1 while cuda:0 is current (`decode --device cuda:1` does not set the device):
    the capture must happen on cuda:1's stream."""
    net = make_net().to("cuda:1")
    c, g = on("cuda:1", *conditioning(net, 2, 256))
    with torch.cuda.device(0):
        plain, graph = both_backends(net, 256, 2, c, g, 1.0)
    assert torch.equal(plain.classes, graph.classes)
    assert (plain.logits - graph.logits).abs().max().item() <= 1e-4


@pytest.mark.cuda
@pytest.mark.slow
def test_bench_gpu_runs_end_to_end_on_the_gpu():
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--samples", "256", "--steps", "2", "--warmup", "5"],
        capture_output=True, text=True, timeout=3600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(result) == set(bench.KEYS)
    errors = result["errors"]
    assert not [label for label in errors if not label.startswith("train_")], errors  # generation never fails
    for key in (*bench.GENERATION_KEYS, *bench.GENERATION_PEAK_KEYS):
        assert isinstance(result[key], float) and result[key] > 0, key
    assert result["graph_exact"] is True and result["graph_same_samples"] is True
    assert result["graph_max_logit_diff"] <= 1e-4
    for config in bench.TRAIN_CONFIGS:  # a configuration may run out of memory on a small GPU: then it says so
        rate, peak = result[f"train_{config}_steps_s"], result[f"train_{config}_peak_mb"]
        assert (rate is not None and rate > 0 and peak > 0) or (rate is None and f"train_{config}" in errors), config
    assert result["device"] and result["torch"] == torch.__version__


# ----- on the CPU -----


def test_bench_gpu_without_a_gpu_says_so_in_one_line_and_exits_2():
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == bench.EXIT_NO_GPU == 2
    assert done.stdout == ""
    assert done.stderr.splitlines() == [bench.NO_GPU_MESSAGE]
    assert bench.NO_GPU_MESSAGE == "bench_gpu: no CUDA GPU here (torch.cuda.is_available() is False); nothing measured"


def test_bench_gpu_reports_every_key_the_documentation_lists():
    asked = {
        "ref_plain_b1", "ref_graph_b1", "ref_plain_b16", "ref_graph_b16",
        "paper_plain_b1", "paper_graph_b1", "paper_plain_b16", "paper_graph_b16", "graph_exact",
        "train_fp32_steps_s", "train_bf16_steps_s", "train_bf16_compile_steps_s",
        "train_fp32_peak_mb", "train_bf16_peak_mb", "train_bf16_compile_peak_mb", "device", "torch",
    }  # fmt: skip
    assert asked <= set(bench.KEYS) and len(set(bench.KEYS)) == len(bench.KEYS)
    documented = (SCRIPT.parents[1] / "docs" / "gpu.md").read_text()
    assert all(f"`{key}`" in documented for key in bench.KEYS)


def test_the_paper_decoder_follows_recipes_vctk_yaml():
    net = bench.paper_decoder(load_recipe(bench.RECIPE))
    assert (len(net.convs), max(net.dilations), net.kernel_size) == (30, 512, 2)
    assert (net.residual_channels, net.gate_channels, net.skip_channels) == (128, 256, 128)
    assert (net.cond_channels, net.global_channels, net.num_classes, net.hop, net.mixtures) == (128, 64, 256, 64, 0)


def test_bench_gpu_generation_timing_and_comparison_run_on_the_cpu():
    net = make_net()
    rate, peak = bench.time_generation(net, "plain", 2, 64, CPU)
    assert rate > 0 and peak is None
    compared = bench.compare_backends(net, CPU, ("plain", "fast"), samples=128, batch=2)
    assert compared["exact"] and compared["same_samples"] and compared["max_logit_diff"] <= 1e-4


def test_bench_gpu_times_real_training_steps_on_synthetic_data():
    recipe = validate_recipe(tiny_dict(), "tiny")
    setup = bench.synthetic_setup(recipe, speakers=3)
    batch = setup.train_batch(7, bench.Shard(4, 1, 3))
    assert batch["audio"].shape == (2, recipe.data.crop_samples) and batch["audio"].abs().max() <= 1
    assert batch["speaker"].shape == (2,) and batch["speaker"].max() < 3
    assert torch.equal(batch["audio"], setup.train_batch(7, bench.Shard(4, 0, 4))["audio"][1:3])  # a pure function of the step
    rate, peak = bench.time_training(recipe, CPU, steps=2, warmup=1)
    assert rate > 0 and peak is None


def test_greedy_mixture_decoding_of_the_cuda_graph_step_equals_the_plain_loop():
    """The CUDA-graph back end's step run eagerly (no GPU needed): 8 sequences x 2048 greedy steps
    of a mixture-output net. It once faked greedy decoding with median noise held in float32, and
    2 of these 8 sequences left the plain loop's path (at steps 701 and 1012)."""
    net = mixture_net()
    c, g = conditioning(net, 8, 2048)
    with torch.inference_mode():
        bias = net.frame_bias(c, g, 8)
        prev = torch.full((8,), mixture.SILENCE)
        plain = engine._PlainBackend(net, 8).run(0, 2048, prev, bias, 0, net.hop, None, 0.0, True, False)[0]
        eager = CudaGraphBackend(net, 8, use_graph=False).run(0, 2048, prev, bias, 0, net.hop, None, 1.0, True, False)[0]
    assert torch.equal(plain, eager)
