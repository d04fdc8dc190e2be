"""The teacher mu_theta: student state features -> loss coefficients phi_t.

phi_t = base + sum_g m_g(s_t) * delta_g for every loss parameter (W or d/U/V
and b; eps, B, log_scale for the well-posed structures), with one of two
forms of the mixing weights m(s):

- "gate" (the authors' demo): m(s) = tanh(A s + c) in (-1, 1)^G.
- "attention" (the paper's Figure 2, phi_t = W softmax(V s_t)): m(s) =
  softmax(A s + c).  The weights sum to one, so phi_t = sum_g m_g (base +
  delta_g) is a convex mix of G learned loss parameter sets, picked by the state.

base starts at the structure's base loss (cross-entropy, or label smoothing
with the structure's epsilon) and every delta at zero, so the first loss the
teacher hands out is exactly the base loss for any state, as in the demo
(W + g * W2, W2 = 0).  A starts random so that the deltas get gradient at once.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .loss_family import dynamic_loss
from .loss_structures import LossParams, LossStructure, build_structure


TEACHER_FORMS = ("gate", "attention")


class Teacher(nn.Module):
    def __init__(self, structure: LossStructure, num_features: int, num_gates: int = 2, squash: bool = False,
                 feature_names: tuple[str, ...] | None = None, log_prob_floor: float | None = None,
                 form: str = "gate"):
        super().__init__()
        if num_gates < 1:
            raise ValueError(f"num_gates must be >= 1, got {num_gates}")
        if form not in TEACHER_FORMS:
            raise ValueError(f"unknown teacher form {form!r}; choose from {TEACHER_FORMS}")
        if feature_names is not None and len(feature_names) != num_features:
            raise ValueError(f"{len(feature_names)} feature names for {num_features} features")
        self.structure = structure
        self.squash = squash
        self.log_prob_floor = log_prob_floor
        self.num_features = num_features
        self.num_gates = num_gates
        self.form = form
        self.feature_names = tuple(feature_names) if feature_names else None
        init = structure.init_params()
        self.base = nn.ParameterDict({k: nn.Parameter(v) for k, v in init.items()})
        self.delta = nn.ParameterDict(
            {k: nn.Parameter(torch.zeros((num_gates, *v.shape), dtype=v.dtype)) for k, v in init.items()}
        )
        self.gate = nn.Linear(num_features, num_gates)

    @property
    def num_classes(self) -> int:
        return self.structure.num_classes

    def gates(self, features: Tensor) -> Tensor:
        """The mixing weights m(s) of the deltas (tanh gates, or attention weights that sum to one)."""
        scores = self.gate(features)
        return torch.softmax(scores, dim=-1) if self.form == "attention" else torch.tanh(scores)

    def forward(self, features: Tensor) -> LossParams:
        """phi_t for one state vector (num_features,)."""
        if features.shape != (self.num_features,):
            raise ValueError(f"teacher expects {self.num_features} features, got shape {tuple(features.shape)}")
        g = self.gates(features)
        return {k: self.base[k] + torch.tensordot(g, self.delta[k], dims=1) for k in self.base}

    def loss(self, lprobs: Tensor, target: Tensor, phi: LossParams, ignore_index: int | None = None,
             reduction: str = "mean") -> Tensor:
        return dynamic_loss(lprobs, target, self.structure, phi, self.squash, ignore_index, reduction,
                            self.log_prob_floor)

    def config(self) -> dict:
        return {
            "structure": self.structure.config(), "num_features": self.num_features, "num_gates": self.num_gates,
            "squash": self.squash, "feature_names": self.feature_names, "log_prob_floor": self.log_prob_floor,
            "form": self.form,
        }

    @classmethod
    def from_config(cls, config: dict) -> "Teacher":
        return cls(build_structure(config["structure"]), config["num_features"], config["num_gates"],
                   config["squash"], config.get("feature_names"), config.get("log_prob_floor"),
                   config.get("form", "gate"))
