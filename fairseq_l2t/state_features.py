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
| ..    | confusion_y_k    | optional: EMA of the mean probability that the student puts |
|       |                  | on class k != y for targets of class y (C (C - 1) features) |

The optional groups (EXTRA_FEATURES) follow the base features in the order
asked for.  Confusion is the student's running soft confusion between
classes (the statistic online label smoothing builds its targets from); it
is meant for image classification, not for a vocabulary of thousands.

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
EXTRA_FEATURES = ("class_accuracy", "confusion")
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

    def __init__(self, num_classes: int, total_steps: int, ema_decay: float = 0.9, extras: tuple[str, ...] = (),
                 ignore_index: int | None = None, sync: Callable[[list[Tensor]], list[Tensor]] | None = None):
        if total_steps < 1:
            raise ValueError(f"total_steps must be >= 1, got {total_steps}")
        if not 0.0 <= ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {ema_decay}")
        unknown = [name for name in extras if name not in EXTRA_FEATURES]
        if unknown or len(set(extras)) != len(extras):
            raise ValueError(f"extra state features must be distinct names from {EXTRA_FEATURES}, got {extras}")
        self.num_classes = num_classes
        self.total_steps = total_steps
        self.ema_decay = ema_decay
        self.extras = tuple(extras)
        self.ignore_index = ignore_index
        self.sync = sync
        self.step = 0
        self.train_loss: float | None = None
        self.train_accuracy: float | None = None
        self.dev_measure = 0.0
        self.class_accuracy = torch.zeros(num_classes, dtype=torch.float64) if "class_accuracy" in extras else None
        self.confusion = torch.zeros(num_classes, num_classes, dtype=torch.float64) if "confusion" in extras else None
        self.class_seen = torch.zeros(num_classes, dtype=torch.bool) if extras else None

    @property
    def feature_names(self) -> tuple[str, ...]:
        names = {
            "class_accuracy": tuple(f"class_accuracy_{c}" for c in range(self.num_classes)),
            "confusion": tuple(f"confusion_{y}_{k}" for y in range(self.num_classes)
                               for k in range(self.num_classes) if k != y),
        }
        return BASE_FEATURES + tuple(name for extra in self.extras for name in names[extra])

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
        groups = {"class_accuracy": lambda: self.class_accuracy,  # built only when asked for (NMT: C = vocabulary)
                  "confusion": lambda: self.confusion[~torch.eye(self.num_classes, dtype=torch.bool)]}
        out = torch.cat([torch.tensor(values, dtype=torch.float64)] + [groups[extra]() for extra in self.extras])
        return out.to(dtype=dtype, device=device)

    @torch.no_grad()
    def observe_batch(self, lprobs: Tensor, target: Tensor) -> None:
        """Record one training step's minibatch (log-probabilities N x C, targets N)."""
        self.step += 1
        rows = lprobs.detach().reshape(-1, lprobs.size(-1))
        if self.confusion is not None and self.ignore_index is not None:
            rows = rows[target.reshape(-1).ne(self.ignore_index)]
        target, target_lprob, correct = kept_targets(lprobs, target, self.ignore_index)
        class_sums = self._class_sums(target, correct, rows) if self.extras else None
        if self.sync is not None:
            parts = [_sums(target_lprob, correct)] + ([class_sums.to(target_lprob.device)] if self.extras else [])
            sums = self.sync([torch.cat(parts)])[0].cpu()
            if self._update_from_sums(sums[:3]) and self.extras:
                self._update_classes(sums[3:])
            return
        if target.numel() == 0:
            return
        loss = -target_lprob.mean().item()
        self.train_loss = self._ema(self.train_loss, loss)
        self.train_accuracy = self._ema(self.train_accuracy, correct.mean().item())
        if self.extras:
            self._update_classes(class_sums)

    def observe_sums(self, sums: Tensor) -> None:
        """Record one step from target_sums, already summed over everything the step saw."""
        if self.extras:
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

    def _class_sums(self, target: Tensor, correct: Tensor, rows: Tensor) -> Tensor:
        """One flat float64 vector: per-class counts, then hits (class_accuracy), then probability rows (confusion),
        so that data parallelism sums it with one collective."""
        target = target.cpu()
        parts = [torch.bincount(target, minlength=self.num_classes).double()]
        if self.class_accuracy is not None:
            parts.append(torch.bincount(target, weights=correct.cpu(), minlength=self.num_classes))
        if self.confusion is not None:
            probs = rows.double().exp().cpu()
            parts.append(torch.zeros(self.num_classes, self.num_classes, dtype=torch.float64)
                         .index_add_(0, target, probs).reshape(-1))
        return torch.cat(parts)

    def _update_classes(self, class_sums: Tensor) -> None:
        """EMA of the per-class statistics over the classes present in the step (first sight: the batch value)."""
        counts, rest = class_sums[:self.num_classes], class_sums[self.num_classes:]
        present = counts > 0
        seen = self.class_seen[present]
        if self.class_accuracy is not None:
            hits, rest = rest[:self.num_classes], rest[self.num_classes:]
            self.class_accuracy[present] = self._blend(self.class_accuracy[present], hits[present] / counts[present],
                                                       seen)
        if self.confusion is not None:
            mean_rows = rest.reshape(self.num_classes, self.num_classes)[present] / counts[present].unsqueeze(1)
            self.confusion[present] = self._blend(self.confusion[present], mean_rows, seen.unsqueeze(1))
        self.class_seen |= present

    def _blend(self, old: Tensor, new: Tensor, seen: Tensor) -> Tensor:
        return torch.where(seen, self.ema_decay * old + (1 - self.ema_decay) * new, new)

    def observe_dev(self, measure: float) -> None:
        """Record the latest dev measure, already scaled to [0, 1]."""
        if not 0.0 <= measure <= 1.0 or math.isnan(measure):
            raise ValueError(f"dev measure must be in [0, 1], got {measure}")
        self.dev_measure = float(measure)

    def _ema(self, old: float | None, new: float) -> float:
        return new if old is None else self.ema_decay * old + (1 - self.ema_decay) * new

    def state_dict(self) -> dict:
        def cloned(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.clone()
        return {
            "step": self.step, "train_loss": self.train_loss, "train_accuracy": self.train_accuracy,
            "dev_measure": self.dev_measure, "class_accuracy": cloned(self.class_accuracy),
            "confusion": cloned(self.confusion), "class_seen": cloned(self.class_seen),
        }

    def load_state_dict(self, state: dict) -> None:
        self.step = state["step"]
        self.train_loss = state["train_loss"]
        self.train_accuracy = state["train_accuracy"]
        self.dev_measure = state["dev_measure"]
        if self.extras:
            self.class_seen = state["class_seen"].clone()
        if self.class_accuracy is not None:
            self.class_accuracy = state["class_accuracy"].clone()
        if self.confusion is not None:
            self.confusion = state["confusion"].clone()

    def copy(self) -> "StudentState":
        twin = StudentState(self.num_classes, self.total_steps, self.ema_decay, self.extras, self.ignore_index,
                            self.sync)
        twin.load_state_dict(self.state_dict())
        return twin
