"""The gated PixelCNN: output (i, j) sees every earlier position and no later one; labels matter."""

import pytest
import torch

from vqaudio.models.pixelcnn import GatedPixelCNN


def dependence(model: GatedPixelCNN, size: int, i: int, j: int) -> torch.Tensor:
    """Which input positions the logits at (i, j) depend on: |d logits(i, j) / d embedding| > 0."""
    codes = torch.randint(0, model.num_codes, (1, size, size), generator=torch.Generator().manual_seed(0))
    embedded = model.embed(codes).permute(0, 3, 1, 2).detach().requires_grad_(True)
    out = model.forward_embedded(embedded, torch.tensor([1]))
    out[0, :, i, j].sum().backward()
    return embedded.grad[0].abs().sum(0) > 0


@pytest.mark.parametrize("kernel, layers", [(3, 8), (5, 4)])
def test_receptive_field_is_exactly_the_past(kernel, layers):
    torch.manual_seed(0)
    size = 8
    model = GatedPixelCNN(num_codes=10, channels=8, layers=layers, kernel=kernel, num_classes=3)
    for i in range(size):
        for j in range(size):
            seen = dependence(model, size, i, j)
            past = torch.zeros(size, size, dtype=torch.bool)
            past[:i] = True
            past[i, :j] = True
            assert not (seen & ~past).any(), f"({i}, {j}) sees the future: {(seen & ~past).nonzero().tolist()}"
            # Deep enough to cover the whole past of an 8x8 map: no blind spot.
            assert torch.equal(seen, past), f"({i}, {j}) misses {(past & ~seen).nonzero().tolist()}"


def test_shapes_and_the_label_changes_the_prediction():
    torch.manual_seed(0)
    model = GatedPixelCNN(num_codes=12, channels=8, layers=3, kernel=3, num_classes=4)
    codes = torch.randint(0, 12, (2, 8, 8))
    a = model(codes, torch.tensor([0, 0]))
    b = model(codes, torch.tensor([3, 3]))
    assert a.shape == (2, 12, 8, 8)
    assert not torch.allclose(a, b)
