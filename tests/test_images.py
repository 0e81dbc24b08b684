"""Image data: CIFAR-10's official Python format through a restricted unpickler, and image folders."""

import os
import pickle

import numpy as np
import pytest
from PIL import Image

from vqaudio.data.images import load_cifar10, load_image_folder, restricted_load
from vqaudio.errors import VQAudioError


def test_cifar_mini_train_and_test_splits(shared_data):
    root = shared_data / "cifar-10-batches-py-mini"
    train = load_cifar10(root, "train")
    test = load_cifar10(root, "test")
    assert train.images.shape == (5000, 32, 32, 3) and train.images.dtype == np.uint8
    assert test.images.shape == (1000, 32, 32, 3) and len(test) == 1000
    assert train.class_names[:3] == ["airplane", "automobile", "bird"] and len(train.class_names) == 10
    assert np.array_equal(np.bincount(train.labels), np.full(10, 500))
    assert np.array_equal(np.bincount(test.labels), np.full(10, 100))
    # Channel planes are put back in place: pixel (0, 0) of image 0 is the first R, G and B values.
    raw = restricted_load(root / "test_batch")[b"data"][0]
    assert tuple(test.images[0, 0, 0]) == (raw[0], raw[1024], raw[2048])
    assert tuple(test.images[0, 31, 31]) == (raw[1023], raw[2047], raw[3071])


class _Boom:
    def __reduce__(self):
        return (os.system, ("touch /tmp/vqaudio-pwned",))


def test_restricted_unpickler_refuses_a_pickle_that_would_run_code(tmp_path):
    evil = tmp_path / "data_batch_1"
    evil.write_bytes(pickle.dumps({b"data": _Boom(), b"labels": [0]}))
    with pytest.raises(VQAudioError, match="refused to unpickle: global 'posix.system' is not allowed"):
        restricted_load(evil)
    assert not os.path.exists("/tmp/vqaudio-pwned")


def test_damaged_or_wrong_cifar_files_are_clear_errors(shared_data, tmp_path):
    source = shared_data / "cifar-10-batches-py-mini"
    (tmp_path / "batches.meta").write_bytes((source / "batches.meta").read_bytes())
    (tmp_path / "test_batch").write_bytes((source / "test_batch").read_bytes()[:5000])
    with pytest.raises(VQAudioError, match="test_batch: not a readable pickle"):
        load_cifar10(tmp_path, "test")
    (tmp_path / "test_batch").write_bytes(pickle.dumps({b"data": np.zeros((2, 10), np.uint8), b"labels": [0, 1]}))
    with pytest.raises(VQAudioError, match=r"must be a uint8 array \[N, 3072\]"):
        load_cifar10(tmp_path, "test")
    with pytest.raises(VQAudioError, match="no data_batch"):
        load_cifar10(tmp_path, "train")
    with pytest.raises(VQAudioError, match="no such folder"):
        load_cifar10(tmp_path / "nope")


def test_image_folder_one_class_per_subfolder(tmp_path):
    rng = np.random.default_rng(0)
    for name, count in (("cat", 3), ("dog", 2)):
        (tmp_path / name).mkdir()
        for i in range(count):
            Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(tmp_path / name / f"{i}.png")
    Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(tmp_path / "dog" / "grey.png")
    images = load_image_folder(tmp_path)
    assert images.class_names == ["cat", "dog"] and images.images.shape == (6, 8, 8, 3)
    assert images.labels.tolist() == [0, 0, 0, 1, 1, 1]
    first = np.asarray(Image.open(tmp_path / "cat" / "0.png"))
    assert np.array_equal(images.images[0], first)  # PNG is lossless: pixels come back exactly
    Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(tmp_path / "dog" / "big.png")
    with pytest.raises(VQAudioError, match="big.png: 16x16, but earlier images are 8x8"):
        load_image_folder(tmp_path)
    assert load_image_folder(tmp_path, size=4).images.shape == (7, 4, 4, 3)
    (tmp_path / "dog" / "bad.png").write_bytes(b"not an image")
    with pytest.raises(VQAudioError, match="bad.png: not a readable image"):
        load_image_folder(tmp_path, size=4)
