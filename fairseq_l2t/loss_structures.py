"""Structures for the loss matrix W of the bilinear loss family.

The family scores a target y by z(p, y) = sum_i W[i, y] * log p_i + b[y].  The
structure decides how W is parametrised: a dense C x C matrix for small label
sets (images), or diagonal plus low rank for vocabularies where C x C entries
cannot exist (NMT, C = 10k-50k).  Every structure keeps its parameters in a
plain dict of tensors so that a teacher can produce them as a differentiable
function of the student's state.

The well-posed structures (`SoftTargetStructure`, `SmoothingStructure`) give W
non-negative columns, W[:, y] = a_y q_y with q_y a probability vector and
a_y > 0, and no bias.  Then -z(p, y) = a_y CE(q_y, p) >= a_y H(q_y) >= 0 with
equality only at p = q_y (Gibbs' inequality): every loss is bounded below and
minimised at a proper distribution, so no member lets the student gain by
pushing non-target probabilities to zero.  Cross-entropy (q_y = e_y) and label
smoothing with any epsilon (q_y = (1 - eps) e_y + eps / C) are exact members.
"""
from __future__ import annotations

import math
from typing import Protocol

import torch
from torch import Tensor

from .robust_losses import corrected_log_probs, generalized_log

LossParams = dict[str, Tensor]


class LossStructure(Protocol):
    """What the loss family needs from a parametrisation of W."""

    num_classes: int

    def init_params(self, dtype: torch.dtype = torch.float32) -> LossParams:
        """The base loss: W = I and b = 0 (cross-entropy without the sigmoid), or label smoothing's W."""

    def score(self, lprobs: Tensor, target: Tensor, params: LossParams) -> Tensor:
        """sum_i W[i, y_n] * lprobs[n, i] + b[y_n] for every row n (b = 0 where the structure has none)."""

    def dense(self, params: LossParams) -> Tensor:
        """W as a C x C tensor (only sensible for small C: plots and tests)."""

    def config(self) -> dict:
        """Constructor arguments, for checkpoints."""


class FloorableStructure(LossStructure, Protocol):
    """A structure whose non-target log-probabilities may be floored (loss_family.dynamic_loss): it needs W's diagonal."""

    def diagonal(self, params: LossParams, target: Tensor) -> Tensor:
        """W[y_n, y_n] for every row n."""


class DenseStructure:
    """W is a full C x C matrix; cost O(C) per example via the column W[:, y]."""

    kind = "dense"

    def __init__(self, num_classes: int):
        if num_classes < 2:
            raise ValueError(f"need at least 2 classes, got {num_classes}")
        self.num_classes = num_classes

    def init_params(self, dtype: torch.dtype = torch.float32) -> LossParams:
        return {
            "W": torch.eye(self.num_classes, dtype=dtype),
            "b": torch.zeros(self.num_classes, dtype=dtype),
        }

    def score(self, lprobs: Tensor, target: Tensor, params: LossParams) -> Tensor:
        columns = params["W"].index_select(1, target)  # C x N, column y_n of W
        return torch.einsum("nc,cn->n", lprobs, columns) + params["b"][target]

    def diagonal(self, params: LossParams, target: Tensor) -> Tensor:
        return params["W"].diagonal()[target]

    def dense(self, params: LossParams) -> Tensor:
        return params["W"]

    def config(self) -> dict:
        return {"kind": self.kind, "num_classes": self.num_classes}


class DiagLowRankStructure:
    """W = diag(d) + U V^T with rank r: O(C r) per example, never a C x C tensor.

    W[i, y] = d[y] [i == y] + sum_k U[i, k] V[y, k], so the score is
    d[y] log p_y + <(log p) U, V[y]>.  At init d = 1 and U = 0 (so W = I);
    V starts random so that the gradient with respect to U is not zero.
    """

    kind = "lowrank"

    def __init__(self, num_classes: int, rank: int, seed: int = 0):
        if num_classes < 2:
            raise ValueError(f"need at least 2 classes, got {num_classes}")
        if rank < 1:
            raise ValueError(f"rank must be >= 1, got {rank}")
        self.num_classes = num_classes
        self.rank = rank
        self.seed = seed

    def init_params(self, dtype: torch.dtype = torch.float32) -> LossParams:
        generator = torch.Generator().manual_seed(self.seed)
        v = torch.randn(self.num_classes, self.rank, generator=generator, dtype=torch.float64)
        return {
            "d": torch.ones(self.num_classes, dtype=dtype),
            "U": torch.zeros(self.num_classes, self.rank, dtype=dtype),
            "V": (v / math.sqrt(self.rank)).to(dtype),
            "b": torch.zeros(self.num_classes, dtype=dtype),
        }

    def score(self, lprobs: Tensor, target: Tensor, params: LossParams) -> Tensor:
        diagonal = params["d"][target] * lprobs.gather(1, target.unsqueeze(1)).squeeze(1)
        low_rank = ((lprobs @ params["U"]) * params["V"].index_select(0, target)).sum(-1)
        return diagonal + low_rank + params["b"][target]

    def diagonal(self, params: LossParams, target: Tensor) -> Tensor:
        return params["d"][target] + (params["U"].index_select(0, target) * params["V"].index_select(0, target)).sum(-1)

    def dense(self, params: LossParams) -> Tensor:
        return torch.diag(params["d"]) + params["U"] @ params["V"].T

    def config(self) -> dict:
        return {"kind": self.kind, "num_classes": self.num_classes, "rank": self.rank, "seed": self.seed}


def _smoothing_mass(raw: Tensor) -> Tensor:
    """eps = clamp(raw, 0, 1), with the gradient passed on the closed interval, bounds included.

    torch's clamp (2.14) passes no gradient at a bound, so a teacher that
    starts exactly at cross-entropy (eps = 0, or the corrected family's q = 0)
    could never move away from it.
    """
    inside = (raw >= 0) & (raw <= 1)
    return torch.where(inside, raw, raw.detach().clamp(0.0, 1.0))


class _WellPosedStructure:
    """What the well-posed structures share: the class count, the base loss's epsilon, the loss scale, the config.

    With `fixed_scale` there is no log_scale parameter and a = 1: the teacher
    shapes the targets but cannot scale the loss, which is an effective
    learning-rate factor that short episodes learn to turn down (a greedy
    lookahead prefers less gradient noise now to progress later).
    """

    kind = ""

    def __init__(self, num_classes: int, smoothing: float = 0.0, fixed_scale: bool = False):
        if num_classes < 2:
            raise ValueError(f"need at least 2 classes, got {num_classes}")
        if not 0.0 <= smoothing < 1.0:
            raise ValueError(f"the base smoothing epsilon must be in [0, 1), got {smoothing}")
        self.num_classes = num_classes
        self.smoothing = smoothing
        self.fixed_scale = fixed_scale

    def _scale_params(self, shape: tuple[int, ...], dtype: torch.dtype) -> LossParams:
        return {} if self.fixed_scale else {"log_scale": torch.zeros(shape, dtype=dtype)}

    def _scale(self, params: LossParams, target: Tensor | None = None) -> Tensor | float:
        """a (per class, or a_y of each target when given); 1 with a fixed scale."""
        if self.fixed_scale:
            return 1.0
        scale = params["log_scale"].exp()
        return scale if target is None else scale[target]

    def mass_and_scale(self, params: LossParams) -> tuple[Tensor, Tensor]:
        """The smoothing mass eps and the loss scale a that `params` give (a = 1 with a fixed scale), for reports."""
        eps = _smoothing_mass(params["eps"])
        scale = self._scale(params)
        return eps, scale if isinstance(scale, Tensor) else torch.ones_like(eps)

    def config(self) -> dict:
        return {"kind": self.kind, "num_classes": self.num_classes, "smoothing": self.smoothing,
                "fixed_scale": self.fixed_scale}


class SoftTargetStructure(_WellPosedStructure):
    """Soft-target cross-entropy: W[:, y] = a_y ((1 - eps_y) e_y + eps_y softmax(B[:, y])).

    Parameters: eps (C,) the smoothing mass of each target class (clamped to
    [0, 1]), B (C x C) logits of where that mass goes, log_scale (C,) with
    a_y = exp(log_scale[y]) the per-class weight.  At init eps = `smoothing`,
    B = 0 (uniform over all C classes, as label smoothing) and a = 1: exactly
    cross-entropy (smoothing 0) or label smoothing with that epsilon.
    """

    kind = "soft_target"

    def init_params(self, dtype: torch.dtype = torch.float32) -> LossParams:
        c = self.num_classes
        return {"eps": torch.full((c,), self.smoothing, dtype=dtype), "B": torch.zeros(c, c, dtype=dtype),
                **self._scale_params((c,), dtype)}

    def score(self, lprobs: Tensor, target: Tensor, params: LossParams) -> Tensor:
        eps = _smoothing_mass(params["eps"])[target]
        spread = torch.softmax(params["B"], dim=0).index_select(1, target)  # C x N, the smoothing target of y_n
        smoothed = torch.einsum("nc,cn->n", lprobs, spread)
        hard = lprobs.gather(1, target.unsqueeze(1)).squeeze(1)
        return self._scale(params, target) * ((1 - eps) * hard + eps * smoothed)

    def diagonal(self, params: LossParams, target: Tensor) -> Tensor:
        return self.dense(params).diagonal()[target]

    def dense(self, params: LossParams) -> Tensor:
        eps = _smoothing_mass(params["eps"])
        eye = torch.eye(self.num_classes, dtype=eps.dtype, device=eps.device)
        return self._scale(params) * ((1 - eps) * eye + eps * torch.softmax(params["B"], dim=0))


class SmoothingStructure(_WellPosedStructure):
    """Low-capacity member: label smoothing whose epsilon and overall weight the teacher sets.

    W = a ((1 - eps) I + eps / C 11^T) with two scalars, eps (clamped to [0, 1])
    and a = exp(log_scale): a schedule of the smoothing mass and of the loss
    scale (an effective learning-rate factor) over training, nothing per class.
    """

    kind = "smoothing"

    def init_params(self, dtype: torch.dtype = torch.float32) -> LossParams:
        return {"eps": torch.full((1,), self.smoothing, dtype=dtype), **self._scale_params((1,), dtype)}

    def score(self, lprobs: Tensor, target: Tensor, params: LossParams) -> Tensor:
        eps = _smoothing_mass(params["eps"])
        hard = lprobs.gather(1, target.unsqueeze(1)).squeeze(1)
        return self._scale(params) * ((1 - eps) * hard + eps * lprobs.mean(-1))

    def diagonal(self, params: LossParams, target: Tensor) -> Tensor:
        eps = _smoothing_mass(params["eps"])
        return (self._scale(params) * (1 - eps + eps / self.num_classes)).expand(target.shape)

    def dense(self, params: LossParams) -> Tensor:
        eps = _smoothing_mass(params["eps"])
        c = self.num_classes
        eye = torch.eye(c, dtype=eps.dtype, device=eps.device)
        return self._scale(params) * ((1 - eps) * eye + eps / c)


class LowRankSoftTargetStructure(_WellPosedStructure):
    """The soft-target family at a vocabulary's size: O(C r) parameters, O(N C r) per batch, no C x C tensor.

    W[:, y] = a_y ((1 - eps_y) e_y + eps_y softmax(U V[y])): where the smoothing
    mass of target y goes is a softmax over the classes of U V[y] (U, V: C x r),
    so the whole family is well-posed as SoftTargetStructure's (same proof).
    At init eps = `smoothing`, U = 0 (the mass is spread uniformly: exactly
    cross-entropy or label smoothing) and V is random, so that the gradient
    with respect to U is not zero.
    """

    kind = "soft_target_lowrank"

    def __init__(self, num_classes: int, smoothing: float = 0.0, rank: int = 8, seed: int = 0,
                 fixed_scale: bool = False):
        super().__init__(num_classes, smoothing, fixed_scale)
        if rank < 1:
            raise ValueError(f"rank must be >= 1, got {rank}")
        self.rank = rank
        self.seed = seed

    def init_params(self, dtype: torch.dtype = torch.float32) -> LossParams:
        c = self.num_classes
        generator = torch.Generator().manual_seed(self.seed)
        v = torch.randn(c, self.rank, generator=generator, dtype=torch.float64) / math.sqrt(self.rank)
        return {"eps": torch.full((c,), self.smoothing, dtype=dtype), "U": torch.zeros(c, self.rank, dtype=dtype),
                "V": v.to(dtype), **self._scale_params((c,), dtype)}

    def _spread(self, params: LossParams, target: Tensor) -> Tensor:
        """N x C: row n is where target y_n's smoothing mass goes, softmax(U V[y_n]).

        Computed once per distinct target and then indexed: a batch of text has
        far fewer types than tokens, and the softmax over C is most of the cost.
        """
        types, of_token = torch.unique(target, return_inverse=True)
        return torch.softmax(params["V"].index_select(0, types) @ params["U"].T, dim=-1).index_select(0, of_token)

    def score(self, lprobs: Tensor, target: Tensor, params: LossParams) -> Tensor:
        eps = _smoothing_mass(params["eps"])[target]
        smoothed = (lprobs * self._spread(params, target)).sum(-1)
        hard = lprobs.gather(1, target.unsqueeze(1)).squeeze(1)
        return self._scale(params, target) * ((1 - eps) * hard + eps * smoothed)

    def diagonal(self, params: LossParams, target: Tensor) -> Tensor:
        eps = _smoothing_mass(params["eps"])[target]
        own = self._spread(params, target).gather(1, target.unsqueeze(1)).squeeze(1)
        return self._scale(params, target) * (1 - eps + eps * own)

    def dense(self, params: LossParams) -> Tensor:
        eps = _smoothing_mass(params["eps"])
        eye = torch.eye(self.num_classes, dtype=eps.dtype, device=eps.device)
        spread = torch.softmax(params["U"] @ params["V"].T, dim=0)
        return self._scale(params) * ((1 - eps) * eye + eps * spread)

    def config(self) -> dict:
        return {**super().config(), "rank": self.rank, "seed": self.seed}


class CorrectedStructure(_WellPosedStructure):
    """The family for noisy labels: forward-corrected, robust, smoothed cross-entropy.

    With p~ = T^T p the student's model of the noisy label, T row-stochastic with
    T[i] = (e_i + A[i]) / (1 + sum_j A[i, j]) (A >= 0 off the diagonal: how much of
    true class i the loss credits to each noisy label j, relative to i itself), and
    g_q the generalised logarithm (fairseq_l2t/robust_losses.py; g_0 = log),

        score(p, y) = a ((1 - eps) g_q(log p~_y) + eps mean_k g_q(log p~_k)),

    loss = -score >= 0 (every g_q(log p~) <= 0).  Parameters: eps (1,) smoothing
    mass and q (1,) robustness, clamped to [0, 1]; A (C x C; its diagonal is not
    used) clamped to [0, inf); log_scale (1,) unless fixed_scale.  Every clamp
    passes its gradient at the bound, and every entry of A moves T on its own, so a
    teacher that starts at cross-entropy gets a gradient for each correction.
    Exact members: cross-entropy (A = 0, q = 0, eps = 0), label smoothing (eps),
    the generalised cross-entropy (q), forward correction with any row-stochastic C
    of positive diagonal (A[i, j] = C[i, j] / C[i, i]: Gold Loss Correction's
    estimate); the teacher's gates then schedule all of them.

    `robustness` is the initial q, `transition` (C x C rows, or None) the initial
    correction: None starts at T = I.  `dense` is T, the transition the correction
    uses (the identity for cross-entropy).
    """

    kind = "corrected"

    def __init__(self, num_classes: int, smoothing: float = 0.0, fixed_scale: bool = False, robustness: float = 0.0,
                 transition: list[list[float]] | None = None):
        super().__init__(num_classes, smoothing, fixed_scale)
        if not 0.0 <= robustness <= 1.0:
            raise ValueError(f"the base robustness q must be in [0, 1], got {robustness}")
        if transition is not None:
            matrix = torch.tensor(transition, dtype=torch.float64)
            if matrix.shape != (num_classes, num_classes):
                raise ValueError(f"the transition matrix must be {num_classes} x {num_classes}, got "
                                 f"{tuple(matrix.shape)}")
            if not (torch.isfinite(matrix).all() and (matrix >= 0).all()
                    and torch.allclose(matrix.sum(1), torch.ones(num_classes, dtype=torch.float64), atol=1e-6)):
                raise ValueError("the transition matrix must be row-stochastic: finite, non-negative entries, "
                                 "every row summing to 1")
            if not (matrix.diagonal() > 0).all():
                raise ValueError("the transition matrix needs a positive diagonal (every true class keeps some of "
                                 "its labels)")
            transition = [[float(v) for v in row] for row in matrix.tolist()]
        self.robustness = robustness
        self.transition = transition

    def init_params(self, dtype: torch.dtype = torch.float32) -> LossParams:
        c = self.num_classes
        strengths = torch.zeros(c, c, dtype=torch.float64)
        if self.transition is not None:
            matrix = torch.tensor(self.transition, dtype=torch.float64)
            strengths = matrix / matrix.diagonal().unsqueeze(1)
        strengths.fill_diagonal_(0.0)
        return {"eps": torch.full((1,), self.smoothing, dtype=dtype), "q": torch.full((1,), self.robustness, dtype=dtype),
                "A": strengths.to(dtype), **self._scale_params((1,), dtype)}

    def transition_matrix(self, params: LossParams) -> Tensor:
        """T[i] = (e_i + A[i]) / (1 + sum_j A[i, j]), A clamped to [0, inf) and its diagonal left out."""
        raw = params["A"]
        eye = torch.eye(self.num_classes, dtype=raw.dtype, device=raw.device)
        inside = raw >= 0
        strengths = torch.where(inside, raw, raw.detach().clamp_min(0.0)) * (1 - eye)
        unnormalised = eye + strengths
        return unnormalised / unnormalised.sum(1, keepdim=True)

    def robustness_of(self, params: LossParams) -> Tensor:
        """q, clamped to [0, 1]."""
        return _smoothing_mass(params["q"])

    def score(self, lprobs: Tensor, target: Tensor, params: LossParams) -> Tensor:
        eps = _smoothing_mass(params["eps"])
        robust = generalized_log(corrected_log_probs(lprobs, self.transition_matrix(params)),
                                 self.robustness_of(params))
        hard = robust.gather(1, target.unsqueeze(1)).squeeze(1)
        return self._scale(params) * ((1 - eps) * hard + eps * robust.mean(-1))

    def dense(self, params: LossParams) -> Tensor:
        return self.transition_matrix(params)

    def config(self) -> dict:
        return {**super().config(), "robustness": self.robustness, "transition": self.transition}

BILINEAR_KINDS = (DenseStructure.kind, DiagLowRankStructure.kind)
LINEAR_KINDS = (SoftTargetStructure.kind, SmoothingStructure.kind, LowRankSoftTargetStructure.kind)
"""Well-posed structures whose loss is linear in the log-probabilities (the one_step engine's shortcut)."""
WELL_POSED_KINDS = (*LINEAR_KINDS, CorrectedStructure.kind)
BILINEAR_PROB_FLOOR = 1e-4


def resolve_prob_floor(kind: str, squash: bool, prob_floor: float | None,
                       options: tuple[str, str, str] = ("--structure", "--squash", "--prob-floor")) -> float:
    """The probability floor a structure runs with: the one given, else 1e-4 for the bilinear structures
    (unbounded below without it) and 0 for the well-posed ones, which refuse a floor and the squash
    (ValueError, naming the caller's `options` for the structure, the squash and the floor)."""
    if kind in WELL_POSED_KINDS:
        if squash or prob_floor:
            raise ValueError(f"{options[0]} {kind} is bounded below by construction; "
                             f"drop {options[1]} and {options[2]}")
        return 0.0
    return BILINEAR_PROB_FLOOR if prob_floor is None else prob_floor


def build_structure(config: dict) -> LossStructure:
    """Rebuild a structure from `structure.config()` (as stored in a teacher checkpoint)."""
    kind = config.get("kind")
    if kind == DenseStructure.kind:
        return DenseStructure(config["num_classes"])
    if kind == DiagLowRankStructure.kind:
        return DiagLowRankStructure(config["num_classes"], config["rank"], config.get("seed", 0))
    if kind == LowRankSoftTargetStructure.kind:
        return LowRankSoftTargetStructure(config["num_classes"], config["smoothing"], config["rank"], config["seed"],
                                          config.get("fixed_scale", False))
    if kind == CorrectedStructure.kind:
        return CorrectedStructure(config["num_classes"], config["smoothing"], config.get("fixed_scale", False),
                                  config.get("robustness", 0.0), config.get("transition"))
    for well_posed in (SoftTargetStructure, SmoothingStructure):
        if kind == well_posed.kind:
            return well_posed(config["num_classes"], config["smoothing"], config.get("fixed_scale", False))
    raise ValueError(f"unknown loss structure {kind!r}; expected one of dense, lowrank, {', '.join(WELL_POSED_KINDS)}")
