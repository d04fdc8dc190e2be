"""The bilinear loss family L_phi(p, y) handed to the student by the teacher.

    z(p, y) = sum_i W[i, y] log p_i + b[y]
    squashed (the paper's loss network):   L = -sigmoid(z)
    unsquashed:                            L = -z      (cross-entropy at W = I, b = 0)

Log-probability floor (our design decision, off by default in the core and on
in the CLIs): with a negative W[i, y] the unsquashed loss is unbounded below,
since pushing log p_i -> -inf lowers it for ever; even W[i, y] = -0.02 then
outweighs cross-entropy's vanishing gradient late in training and collapses
the student onto one class (seen on MNIST).  With `log_prob_floor = m`, the
non-target terms use the smooth floor m + softplus(log p_i - m), so a
negative weight pushes p_i down only until about exp(m): a bounded, margin-like
push.  The target term is never floored, so W = I, b = 0 is still exactly
cross-entropy.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .loss_structures import LossParams, LossStructure

REDUCTIONS = ("none", "sum", "mean")


def dynamic_loss(
    lprobs: Tensor,
    target: Tensor,
    structure: LossStructure,
    params: LossParams,
    squash: bool,
    ignore_index: int | None = None,
    reduction: str = "mean",
    log_prob_floor: float | None = None,
) -> Tensor:
    """Loss of log-probabilities `lprobs` (N x C) against `target` (N,).

    Rows whose target equals `ignore_index` contribute zero and are left out of
    the mean.  reduction='none' returns the per-example losses (zeros at ignored
    rows), 'sum' their sum, 'mean' their mean over kept rows.
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    lprobs = lprobs.reshape(-1, lprobs.size(-1))
    target = target.reshape(-1)
    keep = None
    if ignore_index is not None:
        keep = target.ne(ignore_index)
        target = target.masked_fill(~keep, 0)
    if log_prob_floor is None:
        z = structure.score(lprobs, target, params)
    else:
        floored = log_prob_floor + F.softplus(lprobs - log_prob_floor)
        target_lprob = lprobs.gather(1, target.unsqueeze(1)).squeeze(1)
        target_floored = floored.gather(1, target.unsqueeze(1)).squeeze(1)
        z = structure.score(floored, target, params) + structure.diagonal(params, target) * (target_lprob - target_floored)
    losses = -torch.sigmoid(z) if squash else -z
    if keep is not None:
        losses = losses.masked_fill(~keep, 0.0)
    if reduction == "none":
        return losses
    if reduction == "sum":
        return losses.sum()
    count = keep.sum().clamp(min=1) if keep is not None else losses.new_tensor(losses.numel())
    return losses.sum() / count
