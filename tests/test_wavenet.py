import pytest
import torch

from vqaudio.generation.wavenet_step import Stepper
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
        hop=hop,
    ).eval()


def inputs(net: WaveNet, batch: int = 2, length: int = 48):
    x = torch.randint(0, net.num_classes, (batch, length))
    cond = torch.randn(batch, 5, length // net.hop) if net.cond_proj is not None else None
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
        bias = net.frame_bias(c, g, 3)
        stepper = Stepper(net, 3)
        hop = net.hop if c is not None else 10**9
        steps = torch.stack([stepper(x[:, t], bias[:, t // hop]) for t in range(40)], dim=-1)
    assert torch.allclose(full, steps, atol=1e-5)
def test_missing_conditioning_is_refused():
    net = make_net()
    x, c, g = inputs(net)
    with pytest.raises(ValueError, match="local conditioning"):
        net(x, None, g)
