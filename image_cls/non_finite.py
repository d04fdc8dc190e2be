"""Non-finite values during training: skip what can be skipped, stop what cannot.

A NaN/Inf teacher output or hypergradient is survivable (the student keeps its
last finite loss, the teacher keeps its parameters), but only for a while: the
rule is that `limit` consecutive non-finite values of one kind stop the run.
A checkpoint is never written with a non-finite tensor in it, so the last good
one survives a run that blows up.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

DEFAULT_LIMIT = 10


@dataclass
class NonFiniteCounter:
    """How many values of one kind were non-finite, in all and in a row."""

    what: str
    limit: int = DEFAULT_LIMIT
    total: int = 0
    consecutive: int = 0

    def __post_init__(self) -> None:
        if self.limit < 1:
            raise ValueError(f"the non-finite limit must be >= 1, got {self.limit}")

    def record(self, finite: bool, where: str) -> bool:
        """Count one value; raise FloatingPointError once `limit` in a row were non-finite."""
        if finite:
            self.consecutive = 0
            return True
        self.total += 1
        self.consecutive += 1
        if self.consecutive >= self.limit:
            raise FloatingPointError(f"{self.consecutive} consecutive non-finite {self.what} (last at {where}); "
                                     f"the run cannot recover: lower the learning rates or raise --max-non-finite")
        return False

    def state_dict(self) -> dict:
        return {"total": self.total, "consecutive": self.consecutive}

    def load_state_dict(self, state: dict) -> None:
        self.total, self.consecutive = state["total"], state["consecutive"]


def first_non_finite(tree: object, path: str = "") -> str | None:
    """The path of the first non-finite float tensor or number in nested dicts/lists, or None."""
    if isinstance(tree, torch.Tensor):
        return path if tree.is_floating_point() and not bool(torch.isfinite(tree).all()) else None
    if isinstance(tree, float):
        return path if not math.isfinite(tree) else None
    if isinstance(tree, dict):
        items = tree.items()
    elif isinstance(tree, (list, tuple)):
        items = enumerate(tree)
    else:
        return None
    for key, value in items:
        found = first_non_finite(value, f"{path}.{key}" if path else str(key))
        if found is not None:
            return found
    return None
