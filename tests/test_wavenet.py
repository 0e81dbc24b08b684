import pytest
import torch

from vqaudio.models.wavenet import WaveNet


def make_net(kernel_size: int = 2, cond: bool = True, speaker: bool = True, hop: int = 4) -> WaveNet:
    torch.manual_seed(0)
    return WaveNet(
        num_classes=32,
        residual_channels=8,
        gate_channels=16,
        skip_channels=12,
        layers=6,
        stacks=2,
        kernel_size=kernel_size,
        cond_channels=5 if cond else 0,
        global_channels=3 if speaker else 0,
        cond_hop=hop,
    ).eval()


def inputs(net: WaveNet, batch: int = 2, length: int = 48):
    x = torch.randint(0, net.num_classes, (batch, length))
    cond = torch.randn(batch, 5, length // net.cond_hop) if net.cond_proj is not None else None
    g = torch.randn(batch, 3) if net.global_proj is not None else None
    return x, cond, g


def test_output_shape():
    net = make_net()
    x, c, g = inputs(net)
    assert net(x, c, g).shape == (2, 32, 48)


@pytest.mark.parametrize("t", [0, 7, 20, 47])
def test_changing_input_at_t_changes_no_output_before_t(t):
    net = make_net()
    x, c, g = inputs(net)
    y = x.clone()
    y[:, t] = (y[:, t] + 1) % net.num_classes
    with torch.no_grad():
        a, b = net(x, c, g), net(y, c, g)
    assert torch.equal(a[:, :, :t], b[:, :, :t])
    assert not torch.allclose(a[:, :, t:], b[:, :, t:])  # and the change is seen from t on


def test_receptive_field_is_exact():
    net = make_net(kernel_size=2)
    x, c, g = inputs(net, length=48)
    field = net.receptive_field  # 1 + 2*(1+2+4) = 15 positions, the current one included
    assert field == 15
    y = x.clone()
    y[:, 10] = (y[:, 10] + 1) % net.num_classes
    with torch.no_grad():
        a, b = net(x, c, g), net(y, c, g)
    assert not torch.equal(a[:, :, 10 + field - 1], b[:, :, 10 + field - 1])
    assert torch.equal(a[:, :, 10 + field :], b[:, :, 10 + field :])


@pytest.mark.parametrize("kernel_size", [2, 3])
@pytest.mark.parametrize("cond,speaker", [(True, True), (False, True), (True, False), (False, False)])
def test_incremental_steps_equal_the_full_forward_pass(kernel_size, cond, speaker):
    net = make_net(kernel_size, cond, speaker)
    x, c, g = inputs(net, batch=3, length=40)
    with torch.no_grad():
        full = net(x, c, g)
        state = net.start(3, c, g)
        steps = torch.stack([net.step(state, x[:, t]) for t in range(40)], dim=-1)
    assert torch.allclose(full, steps, atol=1e-5)


def test_generation_feeds_back_its_own_samples_and_matches_the_full_pass():
    net = make_net()
    _, c, g = inputs(net, batch=2, length=32)
    out = net.generate(32, batch=2, cond=c, global_cond=g, first_input=0, temperature=0)
    teacher = torch.cat([torch.zeros(2, 1, dtype=torch.long), out[:, :-1]], dim=1)
    with torch.no_grad():
        greedy = net(teacher, c, g).argmax(1)
    assert torch.equal(out, greedy)


def test_sampling_is_deterministic_under_a_seed():
    net = make_net()
    _, c, g = inputs(net, batch=2, length=32)
    a = net.generate(32, 2, c, g, generator=torch.Generator().manual_seed(5))
    b = net.generate(32, 2, c, g, generator=torch.Generator().manual_seed(5))
    d = net.generate(32, 2, c, g, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a, b)
    assert not torch.equal(a, d)


def test_sampling_follows_the_softmax():
    torch.manual_seed(0)
    net = WaveNet(4, 4, 8, 4, layers=1, stacks=1).eval()
    with torch.no_grad():  # make the network ignore its input: logits = head bias
        for p in net.parameters():
            p.zero_()
        net.head[3].bias.copy_(torch.log(torch.tensor([0.1, 0.2, 0.3, 0.4])))
    out = net.generate(20000, batch=1, generator=torch.Generator().manual_seed(0))
    freq = torch.bincount(out[0], minlength=4).float() / out.numel()
    assert torch.allclose(freq, torch.tensor([0.1, 0.2, 0.3, 0.4]), atol=0.015)


def test_missing_conditioning_is_refused():
    net = make_net()
    x, c, g = inputs(net)
    with pytest.raises(ValueError, match="local conditioning"):
        net(x, None, g)
