"""Images and labels as tensors, and the seeded per-class cuts that every split is made of.

The bottom of the data package: the built-in datasets, a user's own files and
the split logic all build on these, and import nothing above them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import Tensor


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
    noise: dict | None = None  # label_noise.NoiseRecord.as_dict() of the training labels, None when untouched



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

