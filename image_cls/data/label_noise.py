"""Label noise as data: corrupt the training labels of a split, seeded, and record what was done.

- `symmetric:r`: each training label, with probability r, is replaced by a class drawn
  uniformly from the other C - 1 classes (about r of the labels end up wrong).
- `asymmetric:r` (r < 0.5, so that the true class stays the majority of its labels):
  each label of a source class of the mapping, with probability r, becomes its
  mapped class (class-dependent flips between confusable classes); other classes
  stay.  The built-in datasets have the mappings of the literature (MAPPINGS);
  any other dataset, a user's own included, needs `--noise-mapping FILE`.
- `none`: the labels as they are.

Only the training split is corrupted; dev and test never change.  What was
done is recorded (`NoiseRecord`): the realised share of wrong labels and the
realised transition matrix T[i, j], the share of training images of true class
i that carry label j.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from .image_sets import ImageSet

NOISE_KINDS = ("none", "symmetric", "asymmetric")
MAPPINGS: dict[str, dict[int, int]] = {
    # Fashion-MNIST: T-shirt/top -> Shirt, Pullover -> Coat, Coat -> Pullover, Sandal -> Sneaker, Sneaker -> Ankle boot
    "fashion_mnist": {0: 6, 2: 4, 4: 2, 5: 7, 7: 9},
    # MNIST (Patrini et al., CVPR 2017): 2 -> 7, 3 -> 8, 5 <-> 6, 7 -> 1
    "mnist": {2: 7, 3: 8, 5: 6, 6: 5, 7: 1},
    "mnist5k": {2: 7, 3: 8, 5: 6, 6: 5, 7: 1},
    # CIFAR-10 (Patrini et al.): truck -> automobile, bird -> airplane, deer -> horse, cat <-> dog
    "cifar10": {9: 1, 2: 0, 4: 7, 3: 5, 5: 3},
}
_NOISE_SEED_OFFSET = 7_919  # the noise draws from its own generator, never the one of the split or the batches


@dataclass(frozen=True)
class LabelNoise:
    """A noise model: `kind` (none, symmetric, asymmetric), its rate, and the mapping of an asymmetric one."""

    kind: str = "none"
    rate: float = 0.0
    mapping: tuple[tuple[int, int], ...] | None = None  # (source, target) pairs; None: the dataset's built-in one

    def __post_init__(self):
        if self.kind not in NOISE_KINDS:
            raise ValueError(f"unknown label noise {self.kind!r}; write none, symmetric:RATE or asymmetric:RATE")
        if not 0.0 <= self.rate < 1.0:
            raise ValueError(f"the label-noise rate must be in [0, 1), got {self.rate}")
        if self.kind == "asymmetric" and self.rate >= 0.5:
            raise ValueError(f"asymmetric noise needs a rate below 0.5 (the true class must stay the majority of "
                             f"its labels), got {self.rate}")
        if self.kind == "none" and self.rate:
            raise ValueError("label noise 'none' takes no rate")

    @property
    def name(self) -> str:
        return "none" if self.kind == "none" else f"{self.kind}:{self.rate:g}"


def parse_label_noise(text: str) -> LabelNoise:
    """'none', 'symmetric:RATE' or 'asymmetric:RATE' (ValueError in one line for anything else)."""
    kind, colon, rate = text.partition(":")
    if kind == "none" and not colon:
        return LabelNoise()
    if kind not in NOISE_KINDS[1:] or not colon:
        raise ValueError(f"unknown label noise {text!r}; write none, symmetric:RATE or asymmetric:RATE")
    try:
        value = float(rate)
    except ValueError:
        raise ValueError(f"label noise {text!r}: {rate!r} is not a number") from None
    if value != value:
        raise ValueError(f"the label-noise rate must be in [0, 1), got {rate}")
    return LabelNoise(kind, value)


def read_mapping(path: str | Path) -> tuple[tuple[int, int], ...]:
    """A noise mapping file: a JSON object {"SOURCE": TARGET, ...} of class indices (ValueError in one line)."""
    try:
        raw = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"--noise-mapping {path} cannot be read as JSON ({type(err).__name__}: {err}); write an "
                         f"object of class indices such as {{\"0\": 6, \"2\": 4}}") from None
    if not isinstance(raw, dict) or not raw:
        raise ValueError(f"--noise-mapping {path} must hold a non-empty JSON object {{\"SOURCE\": TARGET, ...}}")
    pairs = []
    for source, target in raw.items():
        try:
            pairs.append((int(source), int(target)))
        except (TypeError, ValueError):
            raise ValueError(f"--noise-mapping {path}: {source!r}: {target!r} is not a pair of class indices") from None
        if isinstance(target, bool) or float(target) != int(target):
            raise ValueError(f"--noise-mapping {path}: {source!r}: {target!r} is not a class index")
    return tuple(sorted(pairs))


def mapping_for(noise: LabelNoise, dataset: str, num_classes: int) -> dict[int, int]:
    """The source -> target flips of an asymmetric noise on `dataset`, checked against its classes."""
    if noise.mapping is not None:
        mapping = dict(noise.mapping)
    elif dataset in MAPPINGS:
        mapping = MAPPINGS[dataset]
    else:
        raise ValueError(f"asymmetric noise on {dataset} needs --noise-mapping FILE (a JSON object of class flips "
                         f"such as {{\"0\": 6}}); built-in mappings exist for {', '.join(MAPPINGS)}")
    for source, target in mapping.items():
        for which, label in (("source", source), ("target", target)):
            if not 0 <= label < num_classes:
                raise ValueError(f"the noise mapping names class {label} ({which} of {source} -> {target}) but the "
                                 f"data has classes 0..{num_classes - 1}")
        if source == target:
            raise ValueError(f"the noise mapping maps class {source} to itself; a flip needs another class")
    return mapping


@dataclass(frozen=True)
class NoiseRecord:
    """What a noise draw did to a training split: the realised share of wrong labels and transition matrix."""

    noise: str
    noisy_share: float
    transition: list[list[float]]

    def as_dict(self) -> dict:
        return {"noise": self.noise, "noisy_share": self.noisy_share, "transition": self.transition}


def corrupt(train: ImageSet, noise: LabelNoise, dataset: str, num_classes: int,
            seed: int) -> tuple[ImageSet, NoiseRecord]:
    """`train` with corrupted labels (same images) and the record of the draw; seeded by `seed` alone."""
    clean = train.labels
    labels = clean.clone()
    if noise.kind != "none":
        generator = torch.Generator().manual_seed(seed + _NOISE_SEED_OFFSET)
        flip = torch.rand(len(clean), generator=generator, dtype=torch.float64) < noise.rate
        if noise.kind == "symmetric":
            other = torch.randint(0, num_classes - 1, (len(clean),), generator=generator)
            replacement = other + (other >= clean).long()  # uniform over the C - 1 other classes
        else:
            target = torch.arange(num_classes)
            for source, destination in mapping_for(noise, dataset, num_classes).items():
                target[source] = destination
            replacement = target[clean]
        labels = torch.where(flip, replacement, clean)
    return ImageSet(train.images, labels), NoiseRecord(noise.name, float((labels != clean).double().mean()),
                                                       realised_transition(clean, labels, num_classes).tolist())


def realised_transition(clean: Tensor, noisy: Tensor, num_classes: int) -> Tensor:
    """T[i, j] = share of the images of true class i labelled j (float64; a class with no image: a zero row)."""
    counts = torch.zeros(num_classes, num_classes, dtype=torch.float64)
    counts.index_put_((clean, noisy), torch.ones(len(clean), dtype=torch.float64), accumulate=True)
    return counts / counts.sum(1, keepdim=True).clamp_min(1)
