"""The two pieces of math that losses for noisy labels are built from, as pure functions.

- Forward correction (Patrini et al. 2017; with the transition estimated on
  trusted data, Hendrycks et al.'s Gold Loss Correction, NeurIPS 2018): with
  T[i, j] = P(noisy label j | true label i), row-stochastic, the model of the
  noisy label is T^T p, and the loss of a noisy label y is -log (T^T p)_y.
  T = I gives cross-entropy.
- The generalised logarithm of the generalised cross-entropy (Zhang &
  Sabuncu, NeurIPS 2018): L_q(p, y) = (1 - p_y^q) / q = -g_q(log p_y) with
  g_q(l) = (exp(q l) - 1) / q, bounded for q > 0 (q = 1: the mean absolute
  error) and the logarithm itself at q = 0 (cross-entropy).

Both are exact at their cross-entropy end (T = I, q = 0) up to float64
rounding, keep a finite derivative there in every parameter (so that a
teacher starting at cross-entropy can move away from it), and are used by the
teacher's `corrected` loss family and by the baselines alike.
"""
from __future__ import annotations

import torch
from torch import Tensor

_SERIES_BELOW = 1e-4  # |q l| under which g_q uses its series: the next term, (q l)^3 / 24, is below 5e-14


def corrected_log_probs(lprobs: Tensor, transition: Tensor) -> Tensor:
    """log (T^T p) for every row of log-probabilities `lprobs` (N x C), with `transition` T (C x C, row-stochastic).

    Computed in probability space, shifted by each row's largest log-probability
    and in float64, so that the derivative in T stays finite where T has zeros
    (the identity, where a teacher starts from cross-entropy); returned in the
    dtype of `lprobs`.  A corrected probability below float64's smallest normal
    number (a log below -708, which a student reaches only with such a
    probability itself) is floored there.
    """
    z = lprobs.double()
    shift = z.max(-1, keepdim=True).values.detach()
    mixed = torch.exp(z - shift) @ transition.double()
    return (shift + mixed.clamp_min(torch.finfo(torch.float64).tiny).log()).to(lprobs.dtype)


def generalized_log(log_probs: Tensor, q: Tensor | float) -> Tensor:
    """g_q(l) = (exp(q l) - 1) / q elementwise (l <= 0: a log-probability), exactly l at q = 0.

    Near q l = 0 the series l (1 + q l / 2 + (q l)^2 / 6) replaces the
    quotient, so the value and the derivative in q (l^2 / 2 at q = 0) are
    right at the cross-entropy end.
    """
    x = q * log_probs
    small = x.abs() < _SERIES_BELOW
    safe = torch.where(small, torch.ones_like(x), x)
    ratio = torch.where(small, 1 + x / 2 + x * x / 6, torch.expm1(safe) / safe)
    return log_probs * ratio
