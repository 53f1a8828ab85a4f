"""Tests for surgery.recover.data: the bundled MNIST subset, its fixed split, torchvision folders."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from surgery.errors import SurgeryError
from surgery.recover.data import MNIST_MEAN, MNIST_STD, MnistSplits, load_mnist, loaders


@pytest.fixture(scope="module")
def splits() -> MnistSplits:
    return load_mnist()


def test_split_sizes_and_class_balance(splits):
    assert len(splits.train) == 4000
    assert len(splits.test) == 1000
    assert splits.train.tensors[1].bincount(minlength=10).tolist() == [400] * 10
    assert splits.test.tensors[1].bincount(minlength=10).tolist() == [100] * 10


def test_tensor_shapes_and_dtypes(splits):
    images, labels = splits.train.tensors
    assert images.shape == (4000, 1, 28, 28)
    assert images.dtype == torch.float32
    assert labels.dtype == torch.long
    assert labels.min() == 0 and labels.max() == 9


def test_normalisation_stats_roughly_standard(splits):
    images = splits.train.tensors[0]
    assert abs(images.mean().item()) < 0.05
    assert 0.95 < images.std().item() < 1.05
    # Background pixels (0) map to -mean/std exactly.
    assert images.min().item() == pytest.approx(-MNIST_MEAN / MNIST_STD, abs=1e-6)


def test_train_and_test_are_disjoint(splits):
    def rows(dataset):
        return {row.tobytes() for row in dataset.tensors[0].reshape(len(dataset), -1).numpy()}

    train_rows, test_rows = rows(splits.train), rows(splits.test)
    assert not train_rows & test_rows


def test_split_is_fixed_across_calls(splits):
    again = load_mnist()
    for first, second in [(splits.train, again.train), (splits.test, again.test)]:
        assert torch.equal(first.tensors[0], second.tensors[0])
        assert torch.equal(first.tensors[1], second.tensors[1])


def test_other_seed_gives_other_stratified_split(splits):
    other = load_mnist(seed=1)
    assert not torch.equal(other.test.tensors[0], splits.test.tensors[0])
    assert other.test.tensors[1].bincount(minlength=10).tolist() == [100] * 10


def test_test_fraction_sets_held_out_size():
    small = load_mnist(test_fraction=0.1)
    assert (len(small.train), len(small.test)) == (4500, 500)
    assert small.test.tensors[1].bincount(minlength=10).tolist() == [50] * 10


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.2, 1.5])
def test_bad_test_fraction_raises(fraction):
    with pytest.raises(SurgeryError, match="test_fraction"):
        load_mnist(test_fraction=fraction)


def test_missing_root_raises_clear_error(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(SurgeryError, match="MNIST folder not found") as info:
        load_mnist(missing)
    assert str(missing) in str(info.value)


def test_root_without_mnist_files_raises(tmp_path):
    with pytest.raises(SurgeryError, match="cannot read MNIST"):
        load_mnist(tmp_path)


def _write_idx(path: Path, magic: int, array: np.ndarray) -> None:
    header = struct.pack(">I", magic) + b"".join(struct.pack(">I", n) for n in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def _fake_torchvision_mnist(root: Path, n_train: int, n_test: int) -> None:
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, count in [("train", n_train), ("t10k", n_test)]:
        images = rng.integers(0, 256, size=(count, 28, 28))
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", 2051, images)
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", 2049, np.arange(count) % 10)


def test_root_reads_torchvision_folder_with_its_own_split(tmp_path):
    _fake_torchvision_mnist(tmp_path, n_train=30, n_test=20)
    folder = load_mnist(tmp_path)
    assert (len(folder.train), len(folder.test)) == (30, 20)
    images, labels = folder.train.tensors
    assert images.shape == (30, 1, 28, 28) and images.dtype == torch.float32
    assert labels.dtype == torch.long and labels[:12].tolist() == list(range(10)) + [0, 1]
    assert images.max().item() <= (1 - MNIST_MEAN) / MNIST_STD + 1e-5


def test_loaders_shapes_and_seeded_shuffle(splits):
    train_a, test_a = loaders(splits, batch_size=32, seed=3)
    train_b, _ = loaders(splits, batch_size=32, seed=3)
    train_c, _ = loaders(splits, batch_size=32, seed=4)
    images, labels = next(iter(train_a))
    assert images.shape == (32, 1, 28, 28) and labels.shape == (32,)
    first_b = next(iter(train_b))[1]
    assert torch.equal(labels, first_b)
    assert not torch.equal(labels, next(iter(train_c))[1])
    assert len(train_a) == 125 and len(test_a) == 32


def test_test_loader_is_not_shuffled(splits):
    _, test_loader = loaders(splits, batch_size=50)
    assert torch.equal(next(iter(test_loader))[1], splits.test.tensors[1][:50])


def test_bad_batch_size_raises(splits):
    with pytest.raises(SurgeryError, match="batch_size"):
        loaders(splits, batch_size=0)
