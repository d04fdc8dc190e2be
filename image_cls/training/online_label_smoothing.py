"""Online label smoothing (Zhang et al., "Delving Deep into Label Smoothing", IEEE TIP 2021).

A dynamic loss with no teacher and no dev data, the strongest baseline of its
kind: the soft target of class y in epoch e is the mean predicted
distribution of the training examples of class y that the student classified
correctly in epoch e - 1.

    L = alpha * CE(e_y, p) + (1 - alpha) * CE(S_{e-1}[:, y], p)

alpha = 0.5 as in the paper.  In the first epoch S is label smoothing's
target with `first_epoch_smoothing` (1 - s on the diagonal, s / (C - 1)
elsewhere), as in the widely used PyTorch implementation; a class with no
correct prediction in an epoch keeps its previous column.  Under torchrun the
epoch statistics are summed over processes before the swap.
"""
from __future__ import annotations

import torch
from torch import Tensor

from fairseq_l2t.distributed import all_reduce_sum, is_distributed


class OnlineLabelSmoothing:
    """Callable (lprobs, target, step) -> scalar loss; it records the batch's correct predictions as it goes."""

    def __init__(self, num_classes: int, batches_per_epoch: int, alpha: float = 0.5,
                 first_epoch_smoothing: float = 0.1):
        if batches_per_epoch < 1:
            raise ValueError(f"batches_per_epoch must be >= 1, got {batches_per_epoch}")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        self.num_classes = num_classes
        self.batches_per_epoch = batches_per_epoch
        self.alpha = alpha
        off = first_epoch_smoothing / (num_classes - 1)
        self.targets = torch.full((num_classes, num_classes), off, dtype=torch.float64)
        self.targets.fill_diagonal_(1 - first_epoch_smoothing)  # column y: the soft target of class y
        self.sums = torch.zeros(num_classes, num_classes, dtype=torch.float64)
        self.counts = torch.zeros(num_classes, dtype=torch.float64)
        self.epoch = 0

    def __call__(self, lprobs: Tensor, target: Tensor, step: int) -> Tensor:
        """The loss of training step `step` (its epoch decides which soft targets apply)."""
        epoch = step // self.batches_per_epoch
        if epoch != self.epoch:
            self._next_epoch(epoch)
        self._record(lprobs.detach(), target)
        soft = self.targets.to(lprobs).index_select(1, target).T  # N x C
        hard = -lprobs.gather(1, target.unsqueeze(1)).squeeze(1)
        return (self.alpha * hard - (1 - self.alpha) * (soft * lprobs).sum(-1)).mean()

    def _record(self, lprobs: Tensor, target: Tensor) -> None:
        correct = lprobs.argmax(-1).eq(target)
        probs = lprobs[correct].exp().double().cpu()
        kept = target[correct].cpu()
        self.sums.index_add_(1, kept, probs.T)
        self.counts += torch.bincount(kept, minlength=self.num_classes).double()

    def _next_epoch(self, epoch: int) -> None:
        sums, counts = self.sums, self.counts
        if is_distributed():
            sums, counts = all_reduce_sum([sums, counts])
        seen = counts > 0
        self.targets[:, seen] = sums[:, seen] / counts[seen]
        self.sums.zero_()
        self.counts.zero_()
        self.epoch = epoch

    def state_dict(self) -> dict:
        return {"targets": self.targets.clone(), "sums": self.sums.clone(), "counts": self.counts.clone(),
                "epoch": self.epoch}

    def load_state_dict(self, state: dict) -> None:
        self.targets = state["targets"].clone()
        self.sums = state["sums"].clone()
        self.counts = state["counts"].clone()
        self.epoch = state["epoch"]
