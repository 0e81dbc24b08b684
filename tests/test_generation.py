"""The generation engine: exactness against the teacher-forced pass, back ends, seeds, batches."""

import warnings

import numpy as np
import pytest
import torch

from vqaudio.generation import engine, fast_cpu
from vqaudio.generation.cuda_graph import CudaGraphBackend
from vqaudio.generation.engine import generate, generate_batch
from vqaudio.models.wavenet import WaveNet

BACKENDS = ["plain", "fast"]


def make_net(kernel_size=2, cond=True, speaker=True, hop=4, classes=32):
    torch.manual_seed(0)
    return WaveNet(
        num_classes=classes, residual_channels=8, gate_channels=16, skip_channels=12, layers=6, stacks=2,
        kernel_size=kernel_size, cond_channels=5 if cond else 0, global_channels=3 if speaker else 0, hop=hop,
    ).eval()  # fmt: skip


def conditioning(net, batch, length, seed=1):
    gen = torch.Generator().manual_seed(seed)
    c = torch.randn(batch, 5, length // net.hop, generator=gen) if net.cond_proj is not None else None
    g = torch.randn(batch, 3, generator=gen) if net.global_proj is not None else None
    return c, g


def teacher_forced_logits(net, classes, c, g, first_input=0):
    inputs = torch.cat([torch.full((classes.shape[0], 1), first_input), classes[:, :-1]], dim=1)
    with torch.no_grad():
        return net(inputs, c, g).transpose(1, 2)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kernel_size", [2, 3])
@pytest.mark.parametrize("cond,speaker", [(True, True), (True, False), (False, True)])
def test_every_step_equals_the_teacher_forced_pass(backend, kernel_size, cond, speaker):
    net = make_net(kernel_size, cond, speaker)
    c, g = conditioning(net, 3, 600)
    out = generate(net, 600, 3, c, g, first_input=5, generator=torch.Generator().manual_seed(0),
                   backend=backend, record_logits=True)  # fmt: skip
    assert out.backend == backend and out.classes.shape == (3, 600) and out.logits.shape == (3, 600, 32)
    reference = teacher_forced_logits(net, out.classes, c, g, first_input=5)
    assert (out.logits - reference).abs().max().item() <= 1e-4


def test_fast_path_gives_the_plain_paths_samples_under_a_seed():
    net = make_net()
    c, g = conditioning(net, 4, 1200)
    runs = [generate(net, 1200, 4, c, g, temperature=0.8, generator=torch.Generator().manual_seed(9), backend=b,
                     record_logits=True) for b in BACKENDS]  # fmt: skip
    assert torch.equal(runs[0].classes, runs[1].classes)
    assert (runs[0].logits - runs[1].logits).abs().max().item() <= 1e-4


@pytest.mark.parametrize("backend", BACKENDS)
def test_seeds_make_sampling_repeatable(backend):
    net = make_net()
    c, g = conditioning(net, 2, 200)
    a, b, d = (generate(net, 200, 2, c, g, generator=torch.Generator().manual_seed(s), backend=backend).classes
               for s in (5, 5, 6))  # fmt: skip
    assert torch.equal(a, b) and not torch.equal(a, d)


@pytest.mark.parametrize("backend", BACKENDS)
def test_greedy_decoding_is_the_argmax_of_the_full_pass(backend):
    net = make_net()
    c, g = conditioning(net, 2, 100)
    out = generate(net, 100, 2, c, g, temperature=0, backend=backend)
    assert torch.equal(out.classes, teacher_forced_logits(net, out.classes, c, g).argmax(-1))


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_sampling_follows_the_softmax(backend):
    net = WaveNet(4, 4, 8, 4, layers=1, stacks=1).eval()
    with torch.no_grad():  # make the network ignore its input: logits = head bias
        for p in net.parameters():
            p.zero_()
        net.head[3].bias.copy_(torch.log(torch.tensor([0.1, 0.2, 0.3, 0.4])))
    out = generate(net, 20000, 1, generator=torch.Generator().manual_seed(0), backend=backend)
    freq = torch.bincount(out.classes[0], minlength=4).float() / out.classes.numel()
    assert torch.allclose(freq, torch.tensor([0.1, 0.2, 0.3, 0.4]), atol=0.015)
    hot = generate(net, 20000, 1, temperature=0.5, generator=torch.Generator().manual_seed(0), backend=backend)
    sharpened = torch.tensor([0.1, 0.2, 0.3, 0.4]) ** 2
    freq = torch.bincount(hot.classes[0], minlength=4).float() / hot.classes.numel()
    assert torch.allclose(freq, sharpened / sharpened.sum(), atol=0.015)


@pytest.mark.parametrize("backend", BACKENDS)
def test_one_batch_holds_different_lengths_and_speakers(backend):
    net = make_net()
    lengths = [40, 100, 72]
    gen = torch.Generator().manual_seed(2)
    conds = [torch.randn(5, n // 4, generator=gen) for n in lengths]
    speakers = torch.randn(3, 3, generator=gen)
    together = generate_batch(net, lengths, conds, speakers, temperature=0, backend=backend)
    for i, n in enumerate(lengths):
        alone = generate(net, n, 1, conds[i][None], speakers[i : i + 1], temperature=0, backend=backend).classes[0]
        assert together[i].shape == (n,)
        assert torch.equal(together[i], alone)


def test_missing_fast_path_falls_back_with_a_warning(monkeypatch):
    monkeypatch.setattr(fast_cpu, "available", lambda: "numba is not installed")
    net = make_net()
    c, g = conditioning(net, 1, 40)
    with pytest.warns(UserWarning, match="numba is not installed.*plain PyTorch path"):
        out = generate(net, 40, 1, c, g, backend="auto")
    assert out.backend == "plain"


def test_auto_picks_the_fast_path_on_the_cpu():
    net = make_net()
    c, g = conditioning(net, 1, 40)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert generate(net, 40, 1, c, g, backend="auto").backend == "fast"


def test_device_indexed_step_of_the_cuda_path_equals_the_plain_step():
    """The CUDA-graph back end's step (run eagerly here, no GPU) must compute what the plain one does."""
    net = make_net()
    c, g = conditioning(net, 2, 64)
    with torch.inference_mode():
        bias = net.frame_bias(c, g, 2)
        noise = torch.zeros(64, 2, 32)
        prev = torch.zeros(2, dtype=torch.long)
        plain = engine._PlainBackend(net, 2).run(0, 64, prev, bias, 0, 4, noise, 1.0, True, True)
        eager = CudaGraphBackend(net, 2, use_graph=False).run(0, 64, prev, bias, 0, 4, noise, 1.0, True, True)
    assert torch.equal(plain[0], eager[0])
    assert torch.allclose(plain[1], eager[1], atol=1e-5)


def test_fast_kernel_tanh_is_accurate():
    x = np.linspace(-12, 12, 20001).astype(np.float32)
    approx = np.array([fast_cpu._tanh(v) for v in x[::50]], dtype=np.float32)
    assert np.abs(approx - np.tanh(x[::50])).max() < 2e-6
