"""Smooth dev objectives M (all minimised), returned per example so that large
dev sets can be evaluated in chunks and summed."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

DevObjective = Callable[[Tensor, Tensor], Tensor]


def smooth_error(logits: Tensor, target: Tensor, sharpness: float = 50.0) -> Tensor:
    """2 * sigmoid(k * (max_c p_c - p_y)) - 1: about 0 when right, about 1 when wrong."""
    probs = F.softmax(logits, dim=-1)
    margin = probs.max(-1).values - probs.gather(-1, target.unsqueeze(-1)).squeeze(-1)
    return 2 * torch.sigmoid(sharpness * margin) - 1


def expected_error(logits: Tensor, target: Tensor) -> Tensor:
    """1 - p_y."""
    return 1 - F.softmax(logits, dim=-1).gather(-1, target.unsqueeze(-1)).squeeze(-1)


def cross_entropy(logits: Tensor, target: Tensor) -> Tensor:
    return F.cross_entropy(logits, target, reduction="none")


DEV_OBJECTIVES: dict[str, DevObjective] = {
    "smooth_error": smooth_error,
    "expected_error": expected_error,
    "cross_entropy": cross_entropy,
}


def get_dev_objective(name: str) -> DevObjective:
    if name not in DEV_OBJECTIVES:
        raise ValueError(f"unknown dev objective {name!r}; choose from {sorted(DEV_OBJECTIVES)}")
    return DEV_OBJECTIVES[name]
