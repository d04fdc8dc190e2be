"""Structures for the loss matrix W of the bilinear loss family.

The family scores a target y by z(p, y) = sum_i W[i, y] * log p_i + b[y].  The
structure decides how W is parametrised: a dense C x C matrix for small label
sets (images), or diagonal plus low rank for vocabularies where C x C entries
cannot exist (NMT, C = 10k-50k).  Every structure keeps its parameters in a
plain dict of tensors so that a teacher can produce them as a differentiable
function of the student's state.
"""
from __future__ import annotations

import math
from typing import Protocol

import torch
from torch import Tensor

LossParams = dict[str, Tensor]


class LossStructure(Protocol):
    """What the loss family needs from a parametrisation of W."""

    num_classes: int

    def init_params(self, dtype: torch.dtype = torch.float32) -> LossParams:
        """Parameters giving W = I and b = 0, i.e. cross-entropy without the sigmoid."""

    def score(self, lprobs: Tensor, target: Tensor, params: LossParams) -> Tensor:
        """sum_i W[i, y_n] * lprobs[n, i] + b[y_n] for every row n."""

    def diagonal(self, params: LossParams, target: Tensor) -> Tensor:
        """W[y_n, y_n] for every row n."""

    def dense(self, params: LossParams) -> Tensor:
        """W as a C x C tensor (only sensible for small C: plots and tests)."""

    def config(self) -> dict:
        """Constructor arguments, for checkpoints."""


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


def build_structure(config: dict) -> LossStructure:
    """Rebuild a structure from `structure.config()` (as stored in a teacher checkpoint)."""
    kind = config.get("kind")
    if kind == DenseStructure.kind:
        return DenseStructure(config["num_classes"])
    if kind == DiagLowRankStructure.kind:
        return DiagLowRankStructure(config["num_classes"], config["rank"], config.get("seed", 0))
    raise ValueError(f"unknown loss structure {kind!r}; expected 'dense' or 'lowrank'")
