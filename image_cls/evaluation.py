"""Accuracy and cross-entropy of a student on fixed batches."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@torch.no_grad()
def evaluate(model: nn.Module, batches: Sequence[tuple[Tensor, Tensor]]) -> dict[str, float]:
    """{'loss': mean cross-entropy, 'accuracy': fraction right, 'error': 1 - accuracy, 'count': n}."""
    was_training = model.training
    model.eval()
    loss, correct, count = 0.0, 0, 0
    for inputs, target in batches:
        logits = model(inputs)
        loss += F.cross_entropy(logits, target, reduction="sum").item()
        correct += logits.argmax(-1).eq(target).sum().item()
        count += target.numel()
    model.train(was_training)
    if count == 0:
        raise ValueError("cannot evaluate on a split with zero examples")
    return {"loss": loss / count, "accuracy": correct / count, "error": 1 - correct / count, "count": count}
