import torch

from vqaudio.audio.mulaw import mulaw_decode, mulaw_encode, silence_class


def test_round_trip_error_is_within_one_class_step():
    x = torch.linspace(-1, 1, 10001)
    classes = mulaw_encode(x)
    assert classes.min() == 0 and classes.max() == 255
    back = mulaw_decode(classes)
    # μ-law steps are smallest near zero and about 0.03 near full scale
    assert (back - x).abs().max() < 0.035
    assert (back - x)[x.abs() < 0.01].abs().max() < 0.001


def test_silence_is_the_middle_class():
    assert silence_class() == 128
    assert mulaw_decode(torch.tensor([128])).abs().item() < 1e-3


def test_encoding_is_monotonic():
    x = torch.linspace(-1, 1, 5000)
    assert (mulaw_encode(x).diff() >= 0).all()
