"""The one place where a teacher hands out losses and learns from hypergradients.

Image episodes (image_cls/teacher_episodes.py), online teaching during a
student run (image_cls/student_loop.py) and fairseq's l2t_translation task
all hold a TeacherController, so they share one policy:

- loss parameters: a non-finite teacher output is never handed out; the
  student keeps the last finite one (the teacher's base loss if there was
  none), and the output is counted;
- updates: hypergradients (averaged over a cohort of students) that are not
  finite skip the update; finite ones are clipped to `max_grad_norm` (0: no
  clip) and applied by the teacher's own optimizer; an update that leaves a
  non-finite teacher is undone; skipped updates are counted;
- stopping: `limit` non-finite values of one kind in a row make
  `raise_if_exhausted` raise NonFiniteStop.  The caller decides when to call
  it: at once (image CLIs) or deferred to where nothing poisoned can be saved
  (fairseq's optimizer_step);
- checkpoints: `state_dict` is one schema (teacher config and weights, its
  optimizer, counters, the fallback loss) for every caller.
"""
from __future__ import annotations

import copy
from typing import Sequence

import torch
from torch import Tensor

from .hypergradient import HypergradResult
from .non_finite import DEFAULT_LIMIT, NonFiniteCounter, NonFiniteStop, all_finite
from .teacher import Teacher

SCHEMA = 2  # 1: the per-caller layouts before the controller (teacher_optimizer / optimizer_state / skipped keys)
OPTIMIZERS = ("adam", "sgd")


def teacher_payload(teacher: Teacher) -> dict:
    """What rebuilds a teacher: its config (for Teacher.from_config) and its weights."""
    return {"config": teacher.config(), "state": teacher.state_dict()}


def mean_hypergradient(results: Sequence[HypergradResult]) -> list[Tensor]:
    """dM/dtheta averaged over a cohort of students (one result each)."""
    return [sum(gs) / len(results) for gs in zip(*(r.teacher_grads for r in results))]


class TeacherController:
    """A teacher, its optimizer and the non-finite policy (see the module docstring)."""

    def __init__(self, teacher: Teacher, lr: float, optimizer: str = "adam", max_grad_norm: float = 0.0,
                 max_non_finite: int = DEFAULT_LIMIT):
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown teacher optimizer {optimizer!r}; choose from {OPTIMIZERS}")
        if not lr > 0:
            raise ValueError(f"the teacher's learning rate must be positive, got {lr}")
        if max_grad_norm < 0:
            raise ValueError(f"max_grad_norm must be >= 0, got {max_grad_norm}")
        self.teacher = teacher
        if optimizer == "adam":
            self.optimizer: torch.optim.Optimizer = torch.optim.Adam(teacher.parameters(), lr=lr)
        else:
            self.optimizer = torch.optim.SGD(teacher.parameters(), lr=lr)
        self.max_grad_norm = max_grad_norm
        self.outputs = NonFiniteCounter("teacher outputs", max_non_finite)
        self.hypergradients = NonFiniteCounter("hypergradients", max_non_finite)
        self.updates = 0
        self.last_finite_phi: dict[str, Tensor] | None = None

    @property
    def skipped(self) -> int:
        """Non-finite values of both kinds so far."""
        return self.outputs.total + self.hypergradients.total

    @torch.no_grad()
    def loss_params(self, features: Tensor, where: str) -> dict[str, Tensor]:
        """phi for the student's state `features` (no gradient: the student's loss never trains the teacher)."""
        phi = self.teacher(features)
        if self.outputs.record(all_finite(phi.values()), where):
            self.last_finite_phi = {k: v.clone() for k, v in phi.items()}
            return phi
        fallback = self.last_finite_phi or self.teacher.structure.init_params(features.dtype)
        return {k: v.to(features.device) for k, v in fallback.items()}

    def step(self, results: Sequence[HypergradResult], where: str) -> bool:
        """One update from the mean hypergradient of `results`; False (and counted) when skipped or undone."""
        finite = all(r.is_finite() for r in results)
        if finite:
            grads = mean_hypergradient(results)
            saved = ({k: v.clone() for k, v in self.teacher.state_dict().items()},
                     copy.deepcopy(self.optimizer.state_dict()))
            self.optimizer.zero_grad(set_to_none=True)
            for p, g in zip(self.teacher.parameters(), grads):
                p.grad = g.detach().clone()
            if self.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(self.teacher.parameters(), self.max_grad_norm)
            self.optimizer.step()
            finite = all_finite(self.teacher.parameters())
            if not finite:
                self.teacher.load_state_dict(saved[0])
                self.optimizer.load_state_dict(saved[1])
        self.updates += int(self.hypergradients.record(finite, where))
        return finite

    def raise_if_exhausted(self, hint: str = "lower the learning rates or raise --max-non-finite") -> None:
        """NonFiniteStop when `limit` values of one kind in a row were non-finite."""
        for counter in (self.outputs, self.hypergradients):
            if counter.exhausted:
                raise NonFiniteStop(f"{counter.message()}; the run cannot recover: {hint}")

    def state_dict(self) -> dict:
        return {"schema": SCHEMA, "teacher": teacher_payload(self.teacher), "optimizer": self.optimizer.state_dict(),
                "updates": self.updates, "non_finite": {"outputs": self.outputs.state_dict(),
                                                        "hypergradients": self.hypergradients.state_dict()},
                "last_finite_phi": self.last_finite_phi}

    def load_state_dict(self, state: dict) -> None:
        """Restore a state_dict; a checkpoint of another layout fails with one line (ValueError)."""
        if not isinstance(state, dict) or state.get("schema") != SCHEMA:
            raise ValueError(f"the teacher's state was written before fairseq-l2t's teacher checkpoint schema "
                             f"{SCHEMA}; finish that run with the version that started it, or start afresh")
        self.teacher.load_state_dict(state["teacher"]["state"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.updates = state["updates"]
        self.outputs.load_state_dict(state["non_finite"]["outputs"])
        self.hypergradients.load_state_dict(state["non_finite"]["hypergradients"])
        self.last_finite_phi = state["last_finite_phi"]
