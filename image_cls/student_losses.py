"""The losses a student can be trained with: cross-entropy, label smoothing,
online label smoothing, or whatever the teacher hands out for the student's
current state."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from fairseq_l2t.numerics import all_finite
from fairseq_l2t.state_features import StudentState
from fairseq_l2t.teacher import Teacher

from .non_finite import DEFAULT_LIMIT, NonFiniteCounter
from .online_label_smoothing import OnlineLabelSmoothing

LOSS_NAMES = ("ce", "label_smoothing", "online_label_smoothing", "teacher")


class StudentLoss:
    """Callable (lprobs, target, state) -> scalar loss; never trains the teacher."""

    def __init__(self, name: str, label_smoothing: float = 0.1, teacher: Teacher | None = None,
                 max_non_finite: int = DEFAULT_LIMIT, online: OnlineLabelSmoothing | None = None):
        if name not in LOSS_NAMES:
            raise ValueError(f"unknown loss {name!r}; choose from {LOSS_NAMES}")
        if name == "teacher" and teacher is None:
            raise ValueError("loss 'teacher' needs a teacher (--teacher PATH)")
        if name == "label_smoothing" and not 0.0 < label_smoothing < 1.0:
            raise ValueError(f"label smoothing must be in (0, 1), got {label_smoothing}")
        if name == "online_label_smoothing" and online is None:
            raise ValueError("loss 'online_label_smoothing' needs its OnlineLabelSmoothing statistics")
        self.name = name
        self.online = online
        self.label_smoothing = label_smoothing
        self.teacher = teacher
        self.non_finite_phi = NonFiniteCounter("teacher outputs", max_non_finite)
        self.last_finite_phi: dict[str, Tensor] | None = None

    def __call__(self, lprobs: Tensor, target: Tensor, state: StudentState) -> Tensor:
        if self.name == "ce":
            return F.nll_loss(lprobs, target)
        if self.name == "label_smoothing":
            nll = F.nll_loss(lprobs, target)
            return (1 - self.label_smoothing) * nll - self.label_smoothing * lprobs.mean(-1).mean()
        if self.name == "online_label_smoothing":
            return self.online(lprobs, target, state.step)
        return self.teacher.loss(lprobs, target, self.teacher_phi(state))

    @torch.no_grad()
    def teacher_phi(self, state: StudentState) -> dict[str, Tensor]:
        """The teacher's loss parameters for `state`; a non-finite output is replaced by the last finite one."""
        param = next(self.teacher.parameters())
        phi = self.teacher(state.features(param.dtype, param.device))
        where = f"student step {state.step}"
        if self.non_finite_phi.record(all_finite(phi.values()), where):
            self.last_finite_phi = {k: v.clone() for k, v in phi.items()}
            return phi
        if self.last_finite_phi is None:
            raise FloatingPointError(f"the teacher's first loss (at {where}) is not finite and there is no earlier "
                                     f"one to fall back on; the teacher checkpoint is broken: re-train it")
        return self.last_finite_phi

    def state_dict(self) -> dict:
        """What a resumed run needs to hand out the same losses (the fallback phi, the counters, the online
        label-smoothing statistics)."""
        return {"non_finite_phi": self.non_finite_phi.state_dict(), "last_finite_phi": self.last_finite_phi,
                "online": self.online.state_dict() if self.online is not None else None}

    def load_state_dict(self, state: dict) -> None:
        self.non_finite_phi.load_state_dict(state["non_finite_phi"])
        self.last_finite_phi = state["last_finite_phi"]
        if self.online is not None:
            self.online.load_state_dict(state["online"])
