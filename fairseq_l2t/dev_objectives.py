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


def calibrated_cross_entropy(logits: Tensor, target: Tensor, newton_steps: int = 50) -> Tensor:
    """Cross-entropy of logits / T with the temperature T that minimises its mean over these examples.

    Plain dev cross-entropy also rewards confidence, so a teacher learns to
    take label smoothing away however it affects accuracy; fitted to its best
    temperature, the student's loss no longer changes with a global sharpening
    or flattening of its logits, only with how it ranks the classes.  The fit
    (Newton's method on beta = 1 / T, convex, in float64) carries no gradient:
    at the minimising beta, dM/dlogits with beta held fixed is the exact
    derivative (envelope theorem).
    """
    with torch.no_grad():
        z = logits.detach().double()
        z_target = z.gather(-1, target.unsqueeze(-1)).squeeze(-1)
        beta = torch.ones((), dtype=torch.float64, device=z.device)
        for _ in range(newton_steps):
            p = F.softmax(beta * z, dim=-1)
            mean_z = (p * z).sum(-1)
            slope = (mean_z - z_target).mean()
            curvature = ((p * z * z).sum(-1) - mean_z ** 2).mean()
            if curvature <= 0:
                break
            step = slope / curvature
            beta = torch.where(beta - step > 0, beta - step, beta / 2)
            if step.abs() <= 1e-13 * beta:
                break
    return F.cross_entropy(logits * beta.to(logits.dtype), target, reduction="none")


DEV_OBJECTIVES: dict[str, DevObjective] = {
    "smooth_error": smooth_error,
    "expected_error": expected_error,
    "cross_entropy": cross_entropy,
    "calibrated_cross_entropy": calibrated_cross_entropy,
}


def get_dev_objective(name: str) -> DevObjective:
    if name not in DEV_OBJECTIVES:
        raise ValueError(f"unknown dev objective {name!r}; choose from {sorted(DEV_OBJECTIVES)}")
    return DEV_OBJECTIVES[name]
