"""The losses a student can be trained with: cross-entropy, label smoothing,
online label smoothing, or whatever the teacher hands out for the student's
current state."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from fairseq_l2t.state_features import StudentState
from fairseq_l2t.teacher import Teacher
from fairseq_l2t.teacher_controller import TeacherController

from .online_label_smoothing import OnlineLabelSmoothing

LOSS_NAMES = ("ce", "label_smoothing", "online_label_smoothing", "teacher")


class StudentLoss:
    """Callable (lprobs, target, state) -> scalar loss; never trains the teacher.

    With a teacher, the loss parameters come from its controller, which never
    hands out a non-finite one and stops the run when they keep coming.
    """

    def __init__(self, name: str, label_smoothing: float = 0.1, controller: TeacherController | None = None,
                 online: OnlineLabelSmoothing | None = None):
        if name not in LOSS_NAMES:
            raise ValueError(f"unknown loss {name!r}; choose from {LOSS_NAMES}")
        if name == "teacher" and controller is None:
            raise ValueError("loss 'teacher' needs a teacher (--teacher PATH)")
        if name == "label_smoothing" and not 0.0 < label_smoothing < 1.0:
            raise ValueError(f"label smoothing must be in (0, 1), got {label_smoothing}")
        if name == "online_label_smoothing" and online is None:
            raise ValueError("loss 'online_label_smoothing' needs its OnlineLabelSmoothing statistics")
        self.name = name
        self.online = online
        self.label_smoothing = label_smoothing
        self.controller = controller

    @property
    def teacher(self) -> Teacher | None:
        return self.controller.teacher if self.controller is not None else None

    def __call__(self, lprobs: Tensor, target: Tensor, state: StudentState) -> Tensor:
        if self.name == "ce":
            return F.nll_loss(lprobs, target)
        if self.name == "label_smoothing":
            nll = F.nll_loss(lprobs, target)
            return (1 - self.label_smoothing) * nll - self.label_smoothing * lprobs.mean(-1).mean()
        if self.name == "online_label_smoothing":
            return self.online(lprobs, target, state.step)
        return self.teacher.loss(lprobs, target, self.teacher_phi(state))

    def teacher_phi(self, state: StudentState) -> dict[str, Tensor]:
        """The teacher's loss parameters for `state` (the last finite ones if these are not finite)."""
        param = next(self.teacher.parameters())
        phi = self.controller.loss_params(state.features(param.dtype, param.device), f"student step {state.step}")
        self.controller.raise_if_exhausted()
        return phi
