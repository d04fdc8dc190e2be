"""Non-finite values while a teacher learns: find them, count them, and stop when they do not pass.

A NaN/Inf teacher output or hypergradient is survivable (the student keeps the
last finite loss, the teacher keeps its parameters), but only for a while:
`limit` consecutive non-finite values of one kind stop the run.  Counting and
stopping are separate calls because fairseq needs the stop deferred to a point
where nothing poisoned can be saved (see TeacherController.raise_if_exhausted).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

import torch
from torch import Tensor

DEFAULT_LIMIT = 10


def all_finite(tensors: Iterable[Tensor]) -> bool:
    """True when no tensor holds a NaN or an infinity (every guard's test: outputs, hypergradients, parameters)."""
    return all(bool(torch.isfinite(t).all()) for t in tensors)


class NonFiniteStop(FloatingPointError):
    """Too many non-finite values in a row: the run cannot recover."""


@dataclass
class NonFiniteCounter:
    """How many values of one kind were non-finite, in all and in a row."""

    what: str
    limit: int = DEFAULT_LIMIT
    total: int = 0
    consecutive: int = 0
    last_where: str = ""

    def __post_init__(self) -> None:
        if self.limit < 1:
            raise ValueError(f"the non-finite limit must be >= 1, got {self.limit}")

    def record(self, finite: bool, where: str) -> bool:
        """Count one value; returns `finite`."""
        if finite:
            self.consecutive = 0
        else:
            self.total += 1
            self.consecutive += 1
            self.last_where = where
        return finite

    @property
    def exhausted(self) -> bool:
        return self.consecutive >= self.limit

    def message(self) -> str:
        return f"{self.consecutive} consecutive non-finite {self.what} (last at {self.last_where})"

    def state_dict(self) -> dict:
        return {"total": self.total, "consecutive": self.consecutive, "last_where": self.last_where}

    def load_state_dict(self, state: dict) -> None:
        self.total, self.consecutive = state["total"], state["consecutive"]
        self.last_where = state.get("last_where", "")


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
