"""The student's state s_t that the teacher reads: every feature, in one place.

All features are normalised to roughly [0, 1] and are treated as data (no
gradient flows through them): the teacher's gradient comes only from the dev
objective at the end of an unroll.

| index | name             | definition                                                  |
|-------|------------------|-------------------------------------------------------------|
| 0     | progress         | step / total_steps, clipped to [0, 1]                       |
| 1     | train_loss       | EMA of minibatch cross-entropy, divided by log(C), <= 3     |
| 2     | train_accuracy   | EMA of minibatch accuracy (non-ignored targets)             |
| 3     | dev_measure      | latest dev measure in [0, 1] (accuracy, or BLEU / 100)      |
| 4..   | class_accuracy_c | optional: EMA of accuracy on targets of class c, c < C      |

EMAs start at the first observed value (no bias towards zero).  With `sync`
(data parallelism: a sum over ranks, such as distributed.all_reduce_sum) every
rank observes the global batch, so all ranks read the same features.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

BASE_FEATURES = ("progress", "train_loss", "train_accuracy", "dev_measure")
MAX_NORMALISED_LOSS = 3.0


def kept_targets(lprobs: Tensor, target: Tensor, ignore_index: int | None) -> tuple[Tensor, Tensor, Tensor]:
    """Targets, their log-probabilities and hits (float64), ignored targets left out."""
    lprobs = lprobs.detach().reshape(-1, lprobs.size(-1))
    target = target.reshape(-1)
    # gather and argmax on the N x C tensor, never copying it (NMT: C is the vocabulary)
    target_lprob = lprobs.gather(1, target.clamp(min=0).unsqueeze(1)).squeeze(1).double()
    correct = lprobs.argmax(-1).eq(target).double()
    if ignore_index is not None:
        keep = target.ne(ignore_index)
        target, target_lprob, correct = target[keep], target_lprob[keep], correct[keep]
    return target, target_lprob, correct


@torch.no_grad()
def target_sums(lprobs: Tensor, target: Tensor, ignore_index: int | None = None) -> Tensor:
    """[sum of target log-probs, correct predictions, kept targets] of one batch, for StudentState.observe_sums.

    fairseq adds these up over the micro-batches (and ranks) of one update, so
    that the update is one step of the state whatever --update-freq is.
    """
    _, target_lprob, correct = kept_targets(lprobs, target, ignore_index)
    return _sums(target_lprob, correct)


def _sums(target_lprob: Tensor, correct: Tensor) -> Tensor:
    kept = torch.tensor(float(correct.numel()), dtype=torch.float64, device=correct.device)
    return torch.stack([target_lprob.sum(), correct.sum(), kept])


class StudentState:
    """Running statistics of a training student, turned into teacher features."""

    def __init__(self, num_classes: int, total_steps: int, ema_decay: float = 0.9, per_class: bool = False,
                 ignore_index: int | None = None, sync: Callable[[list[Tensor]], list[Tensor]] | None = None):
        if total_steps < 1:
            raise ValueError(f"total_steps must be >= 1, got {total_steps}")
        if not 0.0 <= ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {ema_decay}")
        self.num_classes = num_classes
        self.total_steps = total_steps
        self.ema_decay = ema_decay
        self.per_class = per_class
        self.ignore_index = ignore_index
        self.sync = sync
        self.step = 0
        self.train_loss: float | None = None
        self.train_accuracy: float | None = None
        self.dev_measure = 0.0
        self.class_accuracy = torch.zeros(num_classes, dtype=torch.float64) if per_class else None
        self.class_seen = torch.zeros(num_classes, dtype=torch.bool) if per_class else None

    @property
    def feature_names(self) -> tuple[str, ...]:
        extra = tuple(f"class_accuracy_{c}" for c in range(self.num_classes)) if self.per_class else ()
        return BASE_FEATURES + extra

    @property
    def num_features(self) -> int:
        return len(self.feature_names)

    def features(self, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> Tensor:
        loss = 1.0 if self.train_loss is None else self.train_loss / math.log(self.num_classes)
        values = [
            min(self.step / self.total_steps, 1.0),
            min(loss, MAX_NORMALISED_LOSS),
            0.0 if self.train_accuracy is None else self.train_accuracy,
            self.dev_measure,
        ]
        out = torch.tensor(values, dtype=torch.float64)
        if self.per_class:
            out = torch.cat([out, self.class_accuracy])
        return out.to(dtype=dtype, device=device)

    @torch.no_grad()
    def observe_batch(self, lprobs: Tensor, target: Tensor) -> None:
        """Record one training step's minibatch (log-probabilities N x C, targets N)."""
        self.step += 1
        target, target_lprob, correct = kept_targets(lprobs, target, self.ignore_index)
        if self.sync is not None:
            self._observe_global(target, target_lprob, correct)
            return
        if target.numel() == 0:
            return
        loss = -target_lprob.mean().item()
        self.train_loss = self._ema(self.train_loss, loss)
        self.train_accuracy = self._ema(self.train_accuracy, correct.mean().item())
        if self.per_class:
            counts, hits = self._class_counts(target, correct)
            self._update_class_accuracy(counts, hits)

    def _observe_global(self, target: Tensor, target_lprob: Tensor, correct: Tensor) -> None:
        """The EMA update from the sums over every rank's shard (one collective)."""
        parts = [_sums(target_lprob, correct)]
        if self.per_class:
            parts += [c.to(target_lprob.device) for c in self._class_counts(target, correct)]
        sums = self.sync([torch.cat(parts)])[0].cpu()
        if self._update_from_sums(sums[:3]) and self.per_class:
            self._update_class_accuracy(sums[3:3 + self.num_classes], sums[3 + self.num_classes:])

    def observe_sums(self, sums: Tensor) -> None:
        """Record one step from target_sums, already summed over everything the step saw."""
        if self.per_class:
            raise ValueError("per-class features need observe_batch (the sums carry no class counts)")
        self.step += 1
        self._update_from_sums(sums)

    def _update_from_sums(self, sums: Tensor) -> bool:
        """EMA update from [target log-prob sum, correct, kept]; False (no update) when nothing was kept."""
        if sums[2] == 0:
            return False
        self.train_loss = self._ema(self.train_loss, -(sums[0] / sums[2]).item())
        self.train_accuracy = self._ema(self.train_accuracy, (sums[1] / sums[2]).item())
        return True

    def _class_counts(self, target: Tensor, correct: Tensor) -> tuple[Tensor, Tensor]:
        counts = torch.bincount(target.cpu(), minlength=self.num_classes).double()
        hits = torch.bincount(target.cpu(), weights=correct.cpu(), minlength=self.num_classes)
        return counts, hits

    def _update_class_accuracy(self, counts: Tensor, hits: Tensor) -> None:
        present = counts > 0
        batch_acc = hits[present] / counts[present]
        old = self.class_accuracy[present]
        seen = self.class_seen[present]
        blended = self.ema_decay * old + (1 - self.ema_decay) * batch_acc
        self.class_accuracy[present] = torch.where(seen, blended, batch_acc)
        self.class_seen |= present

    def observe_dev(self, measure: float) -> None:
        """Record the latest dev measure, already scaled to [0, 1]."""
        if not 0.0 <= measure <= 1.0 or math.isnan(measure):
            raise ValueError(f"dev measure must be in [0, 1], got {measure}")
        self.dev_measure = float(measure)

    def _ema(self, old: float | None, new: float) -> float:
        return new if old is None else self.ema_decay * old + (1 - self.ema_decay) * new

    def state_dict(self) -> dict:
        return {
            "step": self.step, "train_loss": self.train_loss, "train_accuracy": self.train_accuracy,
            "dev_measure": self.dev_measure,
            "class_accuracy": None if self.class_accuracy is None else self.class_accuracy.clone(),
            "class_seen": None if self.class_seen is None else self.class_seen.clone(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.step = state["step"]
        self.train_loss = state["train_loss"]
        self.train_accuracy = state["train_accuracy"]
        self.dev_measure = state["dev_measure"]
        if self.per_class:
            self.class_accuracy = state["class_accuracy"].clone()
            self.class_seen = state["class_seen"].clone()

    def copy(self) -> "StudentState":
        twin = StudentState(self.num_classes, self.total_steps, self.ema_decay, self.per_class, self.ignore_index,
                            self.sync)
        twin.load_state_dict(self.state_dict())
        return twin
