"""`--criterion l2t_dynamic`: the per-token loss the teacher currently hands out.

The teacher, its optimizer and the student's running state live in the task
(`--task l2t_translation`), not here: a criterion's parameters are given to
the student's optimizer by fairseq's trainer, and the teacher must learn only
from the dev reward.  As between fairseq's own tasks and criteria, the task
pushes (`set_loss_params` before every forward) and the criterion reports
back through logging_output: the student-state statistics of a training
batch under the scalar keys STATE_SUM_KEYS (underscore keys, which
reduce_metrics does not log).  Metrics are label_smoothed_cross_entropy's.
"""

from dataclasses import dataclass, field
from typing import Callable

import torch.nn.functional as F
from fairseq.criterions import FairseqCriterion, register_criterion
from fairseq.criterions.label_smoothed_cross_entropy import LabelSmoothedCrossEntropyCriterion
from fairseq.dataclass import FairseqDataclass
from omegaconf import II
from torch import Tensor

from ..state_features import target_sums
from ..loss_structures import LossParams
from ..teacher import Teacher
from .errors import L2TConfigError

STATE_SUM_KEYS = ("_l2t_target_lprob_sum", "_l2t_correct", "_l2t_targets")  # the three numbers of target_sums


class TeacherOwningTask:
    """What a task must be for l2t_dynamic: one that owns a teacher and pushes its loss into the criterion with
    `set_loss_params` before every forward (`--task l2t_translation`).  It lives here, below the task, so that
    the criterion checks its task without importing it."""


@dataclass
class L2TDynamicCriterionConfig(FairseqDataclass):
    sentence_avg: bool = II("optimization.sentence_avg")
    report_accuracy: bool = field(default=False, metadata={"help": "report accuracy metric"})


@register_criterion("l2t_dynamic", dataclass=L2TDynamicCriterionConfig)
class L2TDynamicCriterion(FairseqCriterion):
    def __init__(self, task, sentence_avg: bool, report_accuracy: bool = False):
        super().__init__(task)
        if not isinstance(task, TeacherOwningTask):
            raise L2TConfigError("--criterion l2t_dynamic needs --task l2t_translation (the task owns the teacher)")
        self.sentence_avg = sentence_avg
        self.report_accuracy = report_accuracy
        # the teacher's bound loss, not the teacher: a module attribute would make it a criterion parameter,
        # which fairseq hands to the student's optimizer
        self._teacher_loss: Callable[..., Tensor] | None = None
        self._phi: LossParams | None = None

    def set_loss_params(self, teacher: Teacher, phi: LossParams) -> None:
        """The loss for the next forward passes: `teacher.loss` with parameters `phi` (pushed by the task)."""
        self._teacher_loss, self._phi = teacher.loss, phi

    def forward(self, model, sample, reduce: bool = True):
        if self._phi is None:
            raise RuntimeError("l2t_dynamic got no loss parameters: the task pushes them before every forward")
        net_output = model(**sample["net_input"])
        lprobs = model.get_normalized_probs(net_output, log_probs=True)
        target = model.get_targets(sample, net_output)
        lprobs, target = lprobs.view(-1, lprobs.size(-1)), target.view(-1)
        reduction = "sum" if reduce else "none"
        loss = self._teacher_loss(lprobs, target, self._phi, ignore_index=self.padding_idx, reduction=reduction)
        nll_loss = F.nll_loss(lprobs, target, ignore_index=self.padding_idx, reduction=reduction)
        sample_size = sample["target"].size(0) if self.sentence_avg else sample["ntokens"]
        logging_output = {
            "loss": loss.data, "nll_loss": nll_loss.data, "ntokens": sample["ntokens"],
            "nsentences": sample["target"].size(0), "sample_size": sample_size,
        }
        if model.training:
            sums = target_sums(lprobs, target, self.padding_idx).tolist()
            logging_output.update(zip(STATE_SUM_KEYS, sums))
        if self.report_accuracy:
            keep = target.ne(self.padding_idx)
            logging_output["n_correct"] = lprobs.argmax(-1).eq(target).masked_select(keep).sum().item()
            logging_output["total"] = keep.sum().item()
        return loss, sample_size, logging_output

    @staticmethod
    def reduce_metrics(logging_outputs) -> None:
        """label_smoothed_cross_entropy's metrics (loss, nll_loss, ppl, accuracy), so logs and tools line up."""
        LabelSmoothedCrossEntropyCriterion.reduce_metrics(logging_outputs)

    @staticmethod
    def logging_outputs_can_be_summed() -> bool:
        return True
