"""The losses a student can be trained with: cross-entropy, label smoothing,
or whatever the teacher hands out for the student's current state."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from fairseq_l2t.state_features import StudentState
from fairseq_l2t.teacher import Teacher

LOSS_NAMES = ("ce", "label_smoothing", "teacher")


class StudentLoss:
    """Callable (lprobs, target, state) -> scalar loss; never trains the teacher."""

    def __init__(self, name: str, label_smoothing: float = 0.1, teacher: Teacher | None = None):
        if name not in LOSS_NAMES:
            raise ValueError(f"unknown loss {name!r}; choose from {LOSS_NAMES}")
        if name == "teacher" and teacher is None:
            raise ValueError("loss 'teacher' needs a teacher (--teacher PATH)")
        if name == "label_smoothing" and not 0.0 < label_smoothing < 1.0:
            raise ValueError(f"label smoothing must be in (0, 1), got {label_smoothing}")
        self.name = name
        self.label_smoothing = label_smoothing
        self.teacher = teacher

    def __call__(self, lprobs: Tensor, target: Tensor, state: StudentState) -> Tensor:
        if self.name == "ce":
            return F.nll_loss(lprobs, target)
        if self.name == "label_smoothing":
            nll = F.nll_loss(lprobs, target)
            return (1 - self.label_smoothing) * nll - self.label_smoothing * lprobs.mean(-1).mean()
        param = next(self.teacher.parameters())
        with torch.no_grad():
            phi = self.teacher(state.features(param.dtype, param.device))
        return self.teacher.loss(lprobs, target, phi)
