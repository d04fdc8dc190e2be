"""Tiny float64 problems shared by the hypergradient tests."""
from __future__ import annotations

import torch
from torch import nn

from fairseq_l2t.dev_objectives import get_dev_objective
from fairseq_l2t.functional_student import FunctionalStudent, SGDConfig
from fairseq_l2t.hypergradient import Unroll
from fairseq_l2t.loss_structures import (
    DenseStructure,
    DiagLowRankStructure,
    LowRankSoftTargetStructure,
    SmoothingStructure,
    SoftTargetStructure,
)
from fairseq_l2t.state_features import StudentState
from fairseq_l2t.teacher import Teacher

NUM_CLASSES = 3
NUM_INPUTS = 6


def tiny_mlp(norm: bool = False, dropout: float = 0.0) -> nn.Module:
    layers = [nn.Linear(NUM_INPUTS, 5)]
    if norm:
        layers.append(nn.BatchNorm1d(5))
    layers += [nn.Tanh(), nn.Dropout(dropout), nn.Linear(5, NUM_CLASSES)]
    return nn.Sequential(*layers).double()


STRUCTURES = {
    "dense": lambda: DenseStructure(NUM_CLASSES),
    "lowrank": lambda: DiagLowRankStructure(NUM_CLASSES, 2),
    # the well-posed ones away from the clamp of eps at 0 and 1, where the loss has a kink
    "soft_target": lambda: SoftTargetStructure(NUM_CLASSES, 0.5),
    "smoothing": lambda: SmoothingStructure(NUM_CLASSES, 0.5),
    "soft_target_lowrank": lambda: LowRankSoftTargetStructure(NUM_CLASSES, 0.5, rank=2),
    "soft_target_fixed_scale": lambda: SoftTargetStructure(NUM_CLASSES, 0.5, fixed_scale=True),
}


def perturbed_teacher(structure: str = "dense", squash: bool = False, seed: int = 1, form: str = "gate",
                      num_features: int = 4) -> Teacher:
    """A teacher away from its init so every parameter's path is exercised."""
    teacher = Teacher(STRUCTURES[structure](), num_features=num_features, num_gates=2, squash=squash,
                      form=form).double()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in teacher.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=generator, dtype=p.dtype))
    return teacher


def make_unroll(module: nn.Module, teacher: Teacher, steps: int = 6, objective: str = "cross_entropy",
                rng_seed: int | None = None, momentum: float = 0.9, weight_decay: float = 0.01,
                learnable: bool = False) -> Unroll:
    """Random labels, or with `learnable` labels from a fixed linear rule that the student can pick up."""
    generator = torch.Generator().manual_seed(123)
    rule = torch.randn(NUM_INPUTS, NUM_CLASSES, generator=torch.Generator().manual_seed(7), dtype=torch.float64)

    def labels(x: torch.Tensor) -> torch.Tensor:
        return (x @ rule).argmax(-1) if learnable else torch.randint(0, NUM_CLASSES, x.shape[:-1], generator=generator)

    xs = torch.randn(steps, 8, NUM_INPUTS, generator=generator, dtype=torch.float64)
    ys = labels(xs)
    dev = []
    for _ in range(2):
        x = torch.randn(10, NUM_INPUTS, generator=generator, dtype=torch.float64)
        dev.append((x, labels(x)))
    return Unroll(
        student=FunctionalStudent(module), teacher=teacher,
        sgd=SGDConfig(lr=0.3, momentum=momentum, weight_decay=weight_decay), steps=steps,
        batch_at=lambda t: (xs[t], ys[t]), dev_batches=dev, dev_objective=get_dev_objective(objective),
        tracker=StudentState(NUM_CLASSES, total_steps=steps * 2), rng_seed=rng_seed,
    )


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / max(a.norm(), b.norm()))
