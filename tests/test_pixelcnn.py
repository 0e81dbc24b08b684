"""The gated PixelCNN: output (i, j) sees every earlier position and no later one; labels matter."""

import pytest
import torch

from vqaudio.models.pixelcnn import GatedPixelCNN


def dependence(model: GatedPixelCNN, size: int, i: int, j: int) -> torch.Tensor:
    """Which input positions the logits at (i, j) depend on: |d logits(i, j) / d embedding| > 0."""
    codes = torch.randint(0, model.codebook_size, (1, size, size), generator=torch.Generator().manual_seed(0))
    embedded = model.embed(codes).permute(0, 3, 1, 2).detach().requires_grad_(True)
    out = model.forward_embedded(embedded, torch.tensor([1]))
    out[0, :, i, j].sum().backward()
    return embedded.grad[0].abs().sum(0) > 0


@pytest.mark.parametrize("kernel, layers", [(3, 8), (5, 4)])
def test_receptive_field_is_exactly_the_past(kernel, layers):
    torch.manual_seed(0)
    size = 8
    model = GatedPixelCNN(codebook_size=10, channels=8, layers=layers, kernel=kernel, num_classes=3)
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
    model = GatedPixelCNN(codebook_size=12, channels=8, layers=3, kernel=3, num_classes=4)
    codes = torch.randint(0, 12, (2, 8, 8))
    a = model(codes, torch.tensor([0, 0]))
    b = model(codes, torch.tensor([3, 3]))
    assert a.shape == (2, 12, 8, 8)
    assert not torch.allclose(a, b)


PRIORS = {
    "plain": {},
    "attention and dropout (top prior)": {"attention_every": 2, "heads": 2, "dropout": 0.2},
    "conditioned on top codes (bottom prior)": {"condition_codes": 7, "condition_blocks": 2, "condition_scale": 2,
                                                "attention_every": 3, "heads": 2},  # fmt: skip
}


def top_codes(kw: dict) -> torch.Tensor | None:
    return torch.randint(0, 7, (2, 3, 4), generator=torch.Generator().manual_seed(5)) if kw.get("condition_codes") else None


@pytest.mark.parametrize("kw", PRIORS.values(), ids=PRIORS.keys())
def test_cached_sampling_gives_the_full_forward_pass_logits_at_every_position(kw):
    from vqaudio.generation.pixelcnn import sample_pixelcnn

    torch.manual_seed(0)
    net = GatedPixelCNN(codebook_size=11, channels=8, layers=5, kernel=3, num_classes=3, **kw).eval()
    labels, condition = torch.tensor([0, 2]), top_codes(kw)
    codes, logits = sample_pixelcnn(net, labels, 6, 8, condition, generator=torch.Generator().manual_seed(1),
                                    keep_logits=True)  # fmt: skip
    full = net(codes, labels, condition)
    assert codes.shape == (2, 6, 8)
    assert torch.allclose(logits, full, atol=1e-5), (logits - full).abs().max()
    # and the draws are those of the full-recompute sampler under the same generator
    from vqaudio.generation.pixelcnn import sample_image_codes_full

    slow = sample_image_codes_full(net, labels, 6, 8, condition=condition, generator=torch.Generator().manual_seed(1))
    assert torch.equal(slow, codes)


@pytest.mark.parametrize("kw", list(PRIORS.values())[1:], ids=list(PRIORS.keys())[1:])
def test_attention_and_conditioning_keep_the_receptive_field_in_the_past(kw):
    torch.manual_seed(0)
    size = 6
    model = GatedPixelCNN(codebook_size=10, channels=8, layers=4, kernel=3, num_classes=3, **kw).eval()
    condition = torch.randint(0, 7, (1, 3, 3)) if kw.get("condition_codes") else None
    with torch.no_grad():
        features = model.condition_features(condition)
    codes = torch.randint(0, 10, (1, size, size), generator=torch.Generator().manual_seed(0))
    for i in range(size):
        for j in range(size):
            embedded = model.embed(codes).permute(0, 3, 1, 2).detach().requires_grad_(True)
            model.forward_embedded(embedded, torch.tensor([1]), features)[0, :, i, j].sum().backward()
            seen = embedded.grad[0].abs().sum(0) > 0
            future = torch.ones(size, size, dtype=torch.bool)
            future[:i] = False
            future[i, :j] = False
            assert not (seen & future).any(), f"({i}, {j}) sees {(seen & future).nonzero().tolist()}"


def test_attention_reaches_beyond_the_convolutions():
    """Two 3x3 layers see two columns to the left; attention sees the whole row before."""
    torch.manual_seed(0)
    without = GatedPixelCNN(codebook_size=10, channels=8, layers=2, kernel=3)
    with_attention = GatedPixelCNN(codebook_size=10, channels=8, layers=2, kernel=3, attention_every=1, heads=2)
    assert not dependence(without, 8, 0, 7)[0, 0]
    assert dependence(with_attention, 8, 0, 7)[0, 0]


def test_the_bottom_prior_depends_on_the_top_codes_where_they_are():
    torch.manual_seed(0)
    model = GatedPixelCNN(codebook_size=10, channels=8, layers=2, kernel=3, condition_codes=5, condition_blocks=1,
                          condition_scale=2).eval()  # fmt: skip
    codes = torch.randint(0, 10, (1, 8, 8))
    top = torch.zeros(1, 4, 4, dtype=torch.long)
    changed = top.clone()
    changed[0, 3, 3] = 4  # the bottom-right corner of the top map
    difference = (model(codes, None, top) - model(codes, None, changed)).abs().sum(1)[0]
    assert difference[6:, 6:].min() > 0  # the bottom positions under it change
    assert difference[:2, :2].max() == 0  # far away, nothing changes
    with pytest.raises(ValueError, match="conditioned on top codes"):
        model(codes)
