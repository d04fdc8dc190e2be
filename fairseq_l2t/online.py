"""Online short-horizon teacher updates for long runs.

Every K student updates, look k >= 1 differentiable steps ahead from the live
student (weights and SGD momentum, untouched), score the dev objective and
return dM/dtheta.  It is the same exact reverse pass as a full episode, only
started from where training is now.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor, nn

from .dev_objectives import DevObjective
from .functional_student import FunctionalStudent, SGDConfig
from .hypergradient import Batch, HypergradResult, Unroll, hypergradient
from .state_features import StudentState
from .teacher import Teacher


def lookahead_hypergradient(
    module: nn.Module,
    optimizer: torch.optim.Optimizer,
    teacher: Teacher,
    tracker: StudentState,
    batches: Sequence[Batch],
    dev_batches: Sequence[Batch],
    dev_objective: DevObjective,
    engine: str = "stored",
    ignore_index: int | None = None,
    rng_seed: int | None = None,
    grad_sync: Callable[[list[Tensor]], list[Tensor]] | None = None,
    dev_sync: Callable[[list[Tensor]], list[Tensor]] | None = None,
) -> HypergradResult:
    """dM/dtheta after len(batches) lookahead steps from the live student.

    Data-parallel: batches and dev_batches are this rank's shards; grad_sync
    and dev_sync are as in `Unroll`.
    """
    if len(batches) < 1:
        raise ValueError("the lookahead needs at least one training batch")
    student = FunctionalStudent(module)
    unroll = Unroll(
        student=student, teacher=teacher, sgd=SGDConfig.from_optimizer(optimizer), steps=len(batches),
        batch_at=batches.__getitem__, dev_batches=dev_batches, dev_objective=dev_objective, tracker=tracker,
        ignore_index=ignore_index, rng_seed=rng_seed, grad_sync=grad_sync, dev_sync=dev_sync,
    )
    return hypergradient(unroll, student.snapshot(optimizer), engine=engine)
