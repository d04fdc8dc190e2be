"""Gold Loss Correction's estimate of the label noise (Hendrycks, Mazeika, Wilson, Gimpel, NeurIPS 2018).

A model trained with cross-entropy on the noisy labels predicts p(noisy label | x); averaged over the
trusted examples of true class i, that is row i of C[i, j] = P(noisy label j | true label i), the
row-stochastic matrix that the forward-corrected loss -log (C^T p)_y of a fresh model then uses.  Only
the reward half of the trusted set is used, so that the selection half stays unseen by the method.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@torch.no_grad()
def estimate_transition(model: nn.Module, trusted: Sequence[tuple[Tensor, Tensor]], num_classes: int) -> Tensor:
    """C (float64, C x C): row i is the model's mean predicted distribution over the trusted examples of class i
    (ValueError when a class has none: its row cannot be estimated)."""
    was_training = model.training
    model.eval()
    sums = torch.zeros(num_classes, num_classes, dtype=torch.float64)
    counts = torch.zeros(num_classes, dtype=torch.float64)
    for inputs, target in trusted:
        probs = F.softmax(model(inputs), dim=-1).double().cpu()
        sums.index_add_(0, target.cpu(), probs)
        counts += torch.bincount(target.cpu(), minlength=num_classes).double()
    model.train(was_training)
    missing = (counts == 0).nonzero().flatten().tolist()
    if missing:
        raise ValueError(f"the trusted set has no image of class {missing[0]}, so Gold Loss Correction cannot "
                         f"estimate its row; give every class trusted images")
    return sums / counts.unsqueeze(1)
