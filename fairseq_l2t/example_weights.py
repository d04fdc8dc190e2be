"""Learning to reweight examples (Ren, Zeng, Yang, Urtasun, ICML 2018) from a one-step lookahead.

Per training batch, weights eps_i = 0 of the examples' losses l_i; a virtual
SGD step w' = w - lr * grad_w sum_i eps_i l_i(w); the trusted batch's loss
M(w') differentiated with respect to eps at eps = 0:

    d M(w') / d eps_i = -lr <grad M(w), grad l_i(w)>       (w' = w at eps = 0)

and the weights are w_i = max(-d M / d eps_i, 0), normalised to sum to one
(all zero: the batch is skipped).  lr cancels in the normalisation.  The
inner products are one forward-mode pass, as in the one_step engine: with
v = grad M(w), <grad l_i, v> = sum_c (d l_i / d log p_ic) (J_w log p v)_ic,
and for cross-entropy d l_i / d log p_ic = -[c = y_i].  So the weights cost
one backward on the trusted batch and one forward-mode pass on the training
batch, about three plain steps with the real step.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd import forward_ad

from .functional_student import FunctionalStudent


def lookahead_example_weights(student: FunctionalStudent, params: tuple[Tensor, ...], buffers: dict[str, Tensor],
                              inputs: Tensor, target: Tensor, trusted_inputs: Tensor,
                              trusted_target: Tensor) -> Tensor:
    """The normalised example weights of one training batch (N,), zeros where none is positive.

    `params` and `buffers` are the student's current w (FunctionalStudent.snapshot); the trusted loss M is the
    mean cross-entropy of the trusted batch in eval mode, the examples' losses their cross-entropy in train mode.
    """
    alignment = gradient_alignment(student, params, buffers, inputs, target, trusted_inputs, trusted_target)
    weights = alignment.clamp_min(0)
    total = weights.sum()
    return weights / total if total > 0 else weights


def gradient_alignment(student: FunctionalStudent, params: tuple[Tensor, ...], buffers: dict[str, Tensor],
                       inputs: Tensor, target: Tensor, trusted_inputs: Tensor, trusted_target: Tensor) -> Tensor:
    """<grad M(w), grad l_i(w)> for every training example i (= -d M(w') / d eps_i / lr)."""
    leaves = tuple(p.detach().requires_grad_() for p in params)
    with torch.enable_grad():
        trusted = F.cross_entropy(student.logits(leaves, dict(buffers), trusted_inputs, train=False), trusted_target)
        direction = torch.autograd.grad(trusted, leaves, allow_unused=True)
    direction = [torch.zeros_like(p) if d is None else d for p, d in zip(leaves, direction)]
    with torch.no_grad(), forward_ad.dual_level():
        duals = tuple(forward_ad.make_dual(p.detach(), d) for p, d in zip(params, direction))
        lprobs = F.log_softmax(student.logits(duals, {k: b.clone() for k, b in buffers.items()}, inputs, train=True),
                               dim=-1)
        along = forward_ad.unpack_dual(lprobs).tangent
    return -along.gather(1, target.unsqueeze(1)).squeeze(1)
