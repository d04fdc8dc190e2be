"""Reproducible minibatches: training batches as a pure function of the step index (what a
hypergradient's reverse pass and a bit-identical resume need), and fixed evaluation batches."""
from __future__ import annotations

from typing import Callable, Protocol, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .image_sets import ImageSet

_AUGMENT_PADDING = 4
_SEED_STRIDE = 1_000_003


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
