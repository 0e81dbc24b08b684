"""Block-sparse WaveNets (gradual magnitude pruning) and the fast kernel's block and int8 paths."""

import json

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import invoke, run_main, tiny_dict
from pydantic import ValidationError

from vqaudio.formats.checkpoint import load_checkpoint
from vqaudio.generation import engine, packed
from vqaudio.generation.engine import generate, generate_batch
from vqaudio.models.pruning import (
    PruningSchedule,
    block_norms,
    conv_matrix,
    magnitude_mask,
    zero_block_fraction,
)
from vqaudio.models.wavenet import WaveNet
from vqaudio.recipe import AudioRecipe, validate_recipe
from vqaudio.tasks.run import resume_recipe, train

CPU = torch.device("cpu")

BACKENDS = ["plain", "fast"]


def make_net(block=(1, 16), sparsity=0.75, residual=16, gate=32, skip=16, classes=32, mixtures=0):
    torch.manual_seed(0)
    schedule = PruningSchedule(sparsity, block, 0, 1, 1) if sparsity else None
    net = WaveNet(
        num_classes=classes, residual_channels=residual, gate_channels=gate, skip_channels=skip, layers=6, stacks=2,
        cond_channels=5, global_channels=3, hop=4, pruning=schedule, mixtures=mixtures,
    ).eval()  # fmt: skip
    net.after_optimizer_step(1)  # prunes straight to `sparsity`
    return net


def conditioning(batch, length, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 5, length // 4, generator=gen), torch.randn(batch, 3, generator=gen)


def teacher_forced_logits(net, classes, c, g):
    inputs = torch.cat([torch.zeros(classes.shape[0], 1, dtype=torch.long), classes[:, :-1]], dim=1)
    with torch.no_grad():
        return net(inputs, c, g).transpose(1, 2)


def step_matrices(net):
    return [conv_matrix(m.weight) for m in [*net.convs, *net.outs]]


def test_the_schedule_is_cubic_from_start_to_end():
    s = PruningSchedule(0.9, (1, 16), start=100, end=1100, every=10)
    assert s.target(0) == s.target(99) == 0.0
    assert s.target(1100) == pytest.approx(0.9) and s.target(5000) == pytest.approx(0.9)
    assert s.target(600) == pytest.approx(0.9 * (1 - 0.5**3))
    targets = [s.target(t) for t in range(100, 1101, 10)]
    assert all(b >= a for a, b in zip(targets, targets[1:]))
    assert s.updates_at(100) and s.updates_at(110) and not s.updates_at(105) and not s.updates_at(99)


def test_magnitude_mask_drops_exactly_the_smallest_blocks():
    m = torch.arange(1, 65, dtype=torch.float32).reshape(4, 16)  # row norms grow with the row
    mask = magnitude_mask(m, (1, 8), 0.5)
    assert mask.shape == (4, 2) and int(mask.sum()) == 4
    assert mask[2:].all() and not mask[:2].any()
    with pytest.raises(ValueError, match="3 x 8 do not tile a 4 x 16"):
        block_norms(m, (3, 8))


@pytest.mark.parametrize("block", [(1, 16), (2, 8), (1, 4)])
def test_pruning_zeroes_the_target_fraction_of_blocks_in_every_matrix(block):
    net = make_net(block, 0.75)
    for m in step_matrices(net):
        assert zero_block_fraction(m, block) == pytest.approx(0.75, abs=1 / m.numel())
    assert net.conv_masks.dtype == torch.bool and net.conv_masks.shape == (6, 32 // block[0], 32 // block[1])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("block", [(1, 16), (1, 4)])
def test_a_pruned_net_generates_its_teacher_forced_logits(backend, block):
    """The block path of the kernel (the 16-lane vector path, and the scalar path for narrower
    blocks) keeps the fast path's promise."""
    net = make_net(block)
    runner = engine._choose_backend(net, 3, backend)
    if backend == "fast":
        assert runner.blocks and runner.density == pytest.approx(0.25, abs=0.01)
    c, g = conditioning(3, 400)
    out = generate(net, 400, 3, c, g, generator=torch.Generator().manual_seed(0), backend=backend, record_logits=True)
    assert (out.logits - teacher_forced_logits(net, out.classes, c, g)).abs().max().item() <= 1e-4


@pytest.mark.parametrize("precision", ["fp32", "int8"])
@pytest.mark.parametrize("sparsity", [0.0, 0.75])
def test_fast_and_plain_agree_for_every_weight_format(precision, sparsity):
    net = make_net(sparsity=sparsity)
    c, g = conditioning(4, 800)
    runs = [
        generate(net, 800, 4, c, g, temperature=0.9, generator=torch.Generator().manual_seed(5), backend=b,
                 record_logits=True, precision=precision)  # fmt: skip
        for b in BACKENDS
    ]
    assert torch.equal(runs[0].classes, runs[1].classes)
    assert (runs[0].logits - runs[1].logits).abs().max().item() <= 1e-4


def test_int8_generation_is_the_rounded_networks_teacher_forced_pass():
    net = make_net(sparsity=0.5)
    rounded = packed.int8_copy(net)
    c, g = conditioning(2, 300)
    out = generate(net, 300, 2, c, g, generator=torch.Generator().manual_seed(1), backend="fast", record_logits=True,
                   precision="int8")  # fmt: skip
    assert (out.logits - teacher_forced_logits(rounded, out.classes, c, g)).abs().max().item() <= 1e-4
    # the rounding keeps zero weights zero (small ones may join them), and rounding twice changes nothing
    for a, b in zip(step_matrices(net), step_matrices(rounded)):
        assert (b[a == 0] == 0).all()
        assert (a - b).abs().max() <= a.abs().amax(dim=0).max() / 254 + 1e-7  # half a step of the per-channel scale
    twice = packed.int8_copy(rounded)
    for a, b in zip(step_matrices(rounded), step_matrices(twice)):
        assert torch.allclose(a, b, atol=1e-7, rtol=0)


def test_int8_logit_error_is_small_against_float32():
    """The measured bound of int8 weights: per channel, half a step of max|w| / 127."""
    net = make_net(sparsity=0.0)
    c, g = conditioning(2, 400)
    full = generate(net, 400, 2, c, g, temperature=0, backend="fast", record_logits=True)
    reference = teacher_forced_logits(packed.int8_copy(net), full.classes, c, g)
    error = (reference - full.logits).abs().max().item()
    assert 0 < error < 0.02 * full.logits.std().item()


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_packing_keeps_every_weight(precision):
    torch.manual_seed(3)
    m = torch.randn(3, 20, 32)
    m[:, :, 16:] *= (torch.rand(3, 20, 1) < 0.5).float()  # zero blocks to leave out
    rows = packed.pack(m, 16, precision)
    dense = np.zeros((3, 20, 32), np.float32)
    for layer in range(3):
        for k in range(rows.start[layer], rows.start[layer + 1]):
            c0 = rows.cols[k] * 16
            scale = rows.scale[layer, c0 : c0 + 16] if precision == "int8" else 1.0
            dense[layer, rows.rows[k], c0 : c0 + 16] = rows.vals[k].astype(np.float32) * scale
    expected = m if precision == "fp32" else (lambda q, s: q.float() * s)(*packed.int8_round(m))
    assert np.allclose(dense, expected.numpy(), atol=1e-6, rtol=0)
    assert rows.vals.dtype == (np.int8 if precision == "int8" else np.float32)
    assert rows.scale.shape == ((3, 32) if precision == "int8" else (3, 0))  # float32 blocks are not scaled
    assert len(rows.rows) == int((m.reshape(3, 20, 2, 16) != 0).any(-1).sum())


def test_mixture_outputs_and_batches_of_different_lengths_on_the_block_path():
    net = make_net(sparsity=0.5, classes=65536, mixtures=3)
    lengths = [50, 130, 90]
    c, g = conditioning(3, 132)
    conds = [c[i, :, : -(-n // 4)] for i, n in enumerate(lengths)]
    outs = {b: generate_batch(net, lengths, conds, g, temperature=0, backend=b) for b in BACKENDS}
    for a, b in zip(outs["plain"], outs["fast"]):
        assert torch.equal(a, b)


def test_an_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="precision 'fp16'"):
        generate(make_net(), 10, 1, *conditioning(1, 12), backend="fast", precision="fp16")


def test_recipe_needs_a_pruning_end_and_blocks_that_tile():
    recipe = tiny_dict()
    recipe["model"]["decoder"].update(sparsity=0.5)
    with pytest.raises(ValidationError, match="pruning_end"):
        AudioRecipe.model_validate(recipe)
    recipe["model"]["decoder"].update(pruning_end=10, sparsity_block=[1, 5])
    from vqaudio.models.build import build_audio_vqvae

    with pytest.raises(ValueError, match="1 x 5 do not tile"):
        build_audio_vqvae(AudioRecipe.model_validate(recipe).model, 2, 64)


def test_training_prunes_on_schedule_and_resume_keeps_the_masks(tmp_path):
    def recipe(root, steps):
        data = tiny_dict(train={"runs_dir": str(root / "runs"), "steps": steps, "checkpoint_every": 3, "valid_every": 3})
        data["model"]["decoder"].update(sparsity=0.5, sparsity_block=[1, 8], pruning_start=1, pruning_end=4, pruning_every=1)
        return validate_recipe(data, "tiny")

    straight = load_checkpoint(train(recipe(tmp_path / "a", 6), CPU, show_progress=False).checkpoint)["model"]
    for i in range(4):
        assert zero_block_fraction(conv_matrix(straight[f"decoder.convs.{i}.weight"]), (1, 8)) == pytest.approx(0.5)
        assert zero_block_fraction(conv_matrix(straight[f"decoder.outs.{i}.weight"]), (1, 8)) == pytest.approx(0.5)
    assert straight["decoder.conv_masks"].shape == (4, 16, 2) and straight["decoder.out_masks"].shape == (4, 8, 3)
    # halfway through the schedule (after step 2 of 1..4) fewer blocks are zero
    halfway = load_checkpoint(train(recipe(tmp_path / "b", 2), CPU, show_progress=False).checkpoint)["model"]
    expected = PruningSchedule(0.5, (1, 8), 1, 4, 1).target(2)
    assert zero_block_fraction(conv_matrix(halfway["decoder.convs.0.weight"]), (1, 8)) == pytest.approx(expected, abs=1 / 32)
    # a run resumed from step 3 ends where the straight one did
    first = train(recipe(tmp_path / "c", 3), CPU, show_progress=False)
    resumed = train(resume_recipe(first.run_dir, ["train.steps=6"]), CPU, first.run_dir, show_progress=False)
    again = load_checkpoint(resumed.checkpoint)["model"]
    for key, value in straight.items():
        assert torch.equal(value, again[key]), key


def test_decode_and_eval_take_int8_weights_from_the_cli(trained, tmp_path, capsys):
    """`--precision int8` reaches generation and the decoder likelihood eval reports."""
    _, checkpoint = trained
    clip = tmp_path / "demo0_0.wav"
    invoke("demo-clip", str(clip), "--speaker", "0", "--seconds", "0.5", "--sample-rate", "8000")
    invoke("encode", str(clip), str(tmp_path / "codes.npy"), "-c", str(checkpoint))
    outputs = {}
    for precision in ("fp32", "int8"):
        target = tmp_path / f"{precision}.wav"
        invoke("decode", str(tmp_path / "codes.npy"), str(target), "-c", str(checkpoint), "--temperature", "0", "--precision", precision)
        outputs[precision] = sf.read(target)[0]
        invoke("eval", "-c", str(checkpoint), "--data", str(clip), "--no-baselines", "--metrics", "stoi", "--precision", precision,
               "--json", str(tmp_path / f"{precision}.json"))  # fmt: skip
    reports = {p: json.loads((tmp_path / f"{p}.json").read_text()) for p in ("fp32", "int8")}
    assert reports["int8"]["precision"] == "int8" and reports["fp32"]["precision"] == "fp32"
    nll = {p: reports[p]["systems"][0]["nll_bits_per_sample"] for p in reports}
    assert nll["int8"] != nll["fp32"] and nll["int8"] == pytest.approx(nll["fp32"], rel=0.05)
    assert outputs["int8"].shape == outputs["fp32"].shape
    code, output = run_main(capsys, "decode", str(tmp_path / "codes.npy"), str(tmp_path / "x.wav"), "-c", str(checkpoint),
                            "--precision", "fp16")  # fmt: skip
    assert code == 2 and output.strip() == "error: --precision 'fp16': choose fp32 or int8"


def test_a_pruned_block_never_returns_however_the_step_moved_it():
    """The optimiser moves pruned weights between updates; the mask goes on before the ranking."""
    net = make_net(sparsity=0.5)
    net.pruning = PruningSchedule(0.75, (1, 16), 0, 4, 2)
    before = net.conv_masks.clone()
    with torch.no_grad():
        for conv in net.convs:
            conv.weight.add_(10.0)  # a step that makes every pruned block the largest
    net.after_optimizer_step(2)
    assert not (net.conv_masks & ~before).any()  # only blocks alive before may be kept
    assert zero_block_fraction(conv_matrix(net.convs[0].weight), (1, 16)) == pytest.approx(net.pruning.target(2))


def test_info_describes_a_sparse_decoder():
    from vqaudio.inference.info import describe_decoder

    data = tiny_dict()
    data["model"]["decoder"].update(sparsity=0.9, pruning_start=200, pruning_end=1000)
    text = describe_decoder(validate_recipe(data, "tiny").model)
    assert text.endswith("90% block-sparse (1 x 16 blocks, pruned from step 200 to 1000)")
    assert "sparse" not in describe_decoder(validate_recipe(tiny_dict(), "tiny").model)


def test_the_benchmarks_paper_decoder_is_the_recipes_pruned_to_its_final_sparsity():
    import importlib.util
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "scripts" / "bench_generate.py"
    spec = importlib.util.spec_from_file_location("bench_generate", script)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    net, dense = bench.paper_decoder(), bench.paper_decoder(dense=True)
    assert (len(net.convs), net.residual_channels, net.gate_channels, net.skip_channels) == (30, 128, 256, 128)
    assert net.pruning is not None and dense.pruning is None
    for m in step_matrices(net):
        assert zero_block_fraction(m, net.pruning.block) == pytest.approx(net.pruning.sparsity, abs=1e-3)
    # 30 layers x (kernel 2 x 128 -> 256 gate, 128 -> 128 + 128) + the head: the 3.0 M the docs quote
    assert bench.multiply_adds(dense) == 30 * (2 * 128 * 256 + 128 * 256) + 128 * 128 + 128 * 256
    runner = engine._choose_backend(net, 1, "fast")
    assert runner.blocks and runner.density == pytest.approx(0.1, abs=1e-3)
