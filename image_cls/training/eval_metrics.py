"""Accuracy and cross-entropy of a student on fixed batches."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fairseq_l2t.distributed import all_reduce_sum, is_distributed


@torch.no_grad()
def evaluate(model: nn.Module, batches: Sequence[tuple[Tensor, Tensor]]) -> dict[str, float]:
    """{'loss': mean cross-entropy, 'accuracy': fraction right, 'error': 1 - accuracy, 'count': n}.

    Data-parallel: each rank passes its shard of the split, and the sums are
    reduced over ranks, so every rank returns the whole split's numbers.
    """
    was_training = model.training
    model.eval()
    loss, correct, count = 0.0, 0, 0
    for inputs, target in batches:
        logits = model(inputs)
        loss += F.cross_entropy(logits, target, reduction="sum").item()
        correct += logits.argmax(-1).eq(target).sum().item()
        count += target.numel()
    model.train(was_training)
    if is_distributed():
        sums = all_reduce_sum([torch.tensor([loss, correct, count], dtype=torch.float64)])[0].tolist()
        loss, correct, count = sums[0], int(sums[1]), int(sums[2])
    if count == 0:
        raise ValueError("cannot evaluate on a split with zero examples")
    return {"loss": loss / count, "accuracy": correct / count, "error": 1 - correct / count, "count": count}
