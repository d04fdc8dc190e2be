"""The losses a student can be trained with: cross-entropy, label smoothing, online label smoothing, the
noisy-label baselines (the generalised cross-entropy, Gold Loss Correction's forward-corrected loss, learning
to reweight examples), or whatever the teacher hands out for the student's current state."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from fairseq_l2t.robust_losses import corrected_log_probs, generalized_log
from fairseq_l2t.state_features import StudentState
from fairseq_l2t.teacher import Teacher
from fairseq_l2t.teacher_controller import TeacherController

from .online_label_smoothing import OnlineLabelSmoothing

LOSS_NAMES = ("ce", "label_smoothing", "online_label_smoothing", "gce", "glc", "l2rw", "teacher")


class StudentLoss:
    """Callable (lprobs, target, state, weights=None) -> scalar loss; never trains the teacher.

    - gce: (1 - p_y^q) / q (Zhang & Sabuncu 2018), q = `gce_q` in (0, 1];
    - glc: -log (C^T p)_y with `transition` C, row-stochastic (Hendrycks et al. 2018's forward correction);
    - l2rw: cross-entropy weighted per example by `weights` (Ren et al. 2018; the loop computes them).
    With a teacher, the loss parameters come from its controller, which never hands out a non-finite one and
    stops the run when they keep coming.
    """

    def __init__(self, name: str, label_smoothing: float = 0.1, controller: TeacherController | None = None,
                 online: OnlineLabelSmoothing | None = None, gce_q: float = 0.7, transition: Tensor | None = None):
        if name not in LOSS_NAMES:
            raise ValueError(f"unknown loss {name!r}; choose from {LOSS_NAMES}")
        if name == "teacher" and controller is None:
            raise ValueError("loss 'teacher' needs a teacher (--teacher PATH)")
        if name == "label_smoothing" and not 0.0 < label_smoothing < 1.0:
            raise ValueError(f"label smoothing must be in (0, 1), got {label_smoothing}")
        if name == "online_label_smoothing" and online is None:
            raise ValueError("loss 'online_label_smoothing' needs its OnlineLabelSmoothing statistics")
        if name == "gce" and not 0.0 < gce_q <= 1.0:
            raise ValueError(f"the generalised cross-entropy's q must be in (0, 1], got {gce_q}")
        if name == "glc" and transition is None:
            raise ValueError("loss 'glc' needs the estimated transition matrix")
        self.name = name
        self.online = online
        self.label_smoothing = label_smoothing
        self.controller = controller
        self.gce_q = gce_q
        self.transition = transition

    @property
    def teacher(self) -> Teacher | None:
        return self.controller.teacher if self.controller is not None else None

    @property
    def reweights_examples(self) -> bool:
        """Whether the loop must hand over example weights (learning to reweight examples)."""
        return self.name == "l2rw"

    def __call__(self, lprobs: Tensor, target: Tensor, state: StudentState, weights: Tensor | None = None) -> Tensor:
        if self.name == "ce":
            return F.nll_loss(lprobs, target)
        if self.name == "label_smoothing":
            nll = F.nll_loss(lprobs, target)
            return (1 - self.label_smoothing) * nll - self.label_smoothing * lprobs.mean(-1).mean()
        if self.name == "online_label_smoothing":
            return self.online(lprobs, target, state.step)
        if self.name == "gce":
            return -generalized_log(lprobs.gather(1, target.unsqueeze(1)).squeeze(1), self.gce_q).mean()
        if self.name == "glc":
            corrected = corrected_log_probs(lprobs, self.transition.to(lprobs.device))
            return F.nll_loss(corrected, target)
        if self.name == "l2rw":
            if weights is None:
                raise ValueError("loss 'l2rw' needs the batch's example weights")
            return -(weights.detach() * lprobs.gather(1, target.unsqueeze(1)).squeeze(1)).sum()
        return self.teacher.loss(lprobs, target, self.teacher_phi(state))

    def teacher_phi(self, state: StudentState) -> dict[str, Tensor]:
        """The teacher's loss parameters for `state` (the last finite ones if these are not finite)."""
        param = next(self.teacher.parameters())
        phi = self.controller.loss_params(state.features(param.dtype, param.device), f"student step {state.step}")
        self.controller.raise_if_exhausted()
        return phi

