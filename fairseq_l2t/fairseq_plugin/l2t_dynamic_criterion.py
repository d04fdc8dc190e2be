"""`--criterion l2t_dynamic`: the per-token loss the teacher currently hands out.

The teacher, its optimizer and the student's running state live in the task
(`--task l2t_translation`), not here: a criterion's parameters are given to
the student's optimizer by fairseq's trainer, and the teacher must learn only
from the dev reward.
"""

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from fairseq import metrics, utils
from fairseq.criterions import FairseqCriterion, register_criterion
from fairseq.dataclass import FairseqDataclass
from omegaconf import II

from .errors import L2TConfigError


@dataclass
class L2TDynamicCriterionConfig(FairseqDataclass):
    sentence_avg: bool = II("optimization.sentence_avg")
    report_accuracy: bool = field(default=False, metadata={"help": "report accuracy metric"})


@register_criterion("l2t_dynamic", dataclass=L2TDynamicCriterionConfig)
class L2TDynamicCriterion(FairseqCriterion):
    def __init__(self, task, sentence_avg: bool, report_accuracy: bool = False):
        super().__init__(task)
        if not hasattr(task, "current_loss_params"):
            raise L2TConfigError("--criterion l2t_dynamic needs --task l2t_translation (the task owns the teacher)")
        self.sentence_avg = sentence_avg
        self.report_accuracy = report_accuracy

    def forward(self, model, sample, reduce: bool = True):
        net_output = model(**sample["net_input"])
        lprobs = model.get_normalized_probs(net_output, log_probs=True)
        target = model.get_targets(sample, net_output)
        lprobs, target = lprobs.view(-1, lprobs.size(-1)), target.view(-1)
        teacher = self.task.teacher
        phi = self.task.current_loss_params(lprobs.device)
        reduction = "sum" if reduce else "none"
        loss = teacher.loss(lprobs, target, phi, ignore_index=self.padding_idx, reduction=reduction)
        nll_loss = F.nll_loss(lprobs, target, ignore_index=self.padding_idx, reduction=reduction)
        if model.training:
            self.task.observe_train_batch(lprobs, target)
        sample_size = sample["target"].size(0) if self.sentence_avg else sample["ntokens"]
        logging_output = {
            "loss": loss.data, "nll_loss": nll_loss.data, "ntokens": sample["ntokens"],
            "nsentences": sample["target"].size(0), "sample_size": sample_size,
        }
        if self.report_accuracy:
            keep = target.ne(self.padding_idx)
            logging_output["n_correct"] = lprobs.argmax(-1).eq(target).masked_select(keep).sum().item()
            logging_output["total"] = keep.sum().item()
        return loss, sample_size, logging_output

    @staticmethod
    def reduce_metrics(logging_outputs) -> None:
        """Same keys and scaling as label_smoothed_cross_entropy, so logs and tools line up."""
        loss_sum = sum(log.get("loss", 0) for log in logging_outputs)
        nll_loss_sum = sum(log.get("nll_loss", 0) for log in logging_outputs)
        ntokens = sum(log.get("ntokens", 0) for log in logging_outputs)
        sample_size = sum(log.get("sample_size", 0) for log in logging_outputs)
        metrics.log_scalar("loss", loss_sum / sample_size / math.log(2), sample_size, round=3)
        metrics.log_scalar("nll_loss", nll_loss_sum / ntokens / math.log(2), ntokens, round=3)
        metrics.log_derived("ppl", lambda meters: utils.get_perplexity(meters["nll_loss"].avg))
        total = utils.item(sum(log.get("total", 0) for log in logging_outputs))
        if total > 0:
            metrics.log_scalar("total", total)
            metrics.log_scalar("n_correct", utils.item(sum(log.get("n_correct", 0) for log in logging_outputs)))
            metrics.log_derived("accuracy", lambda meters: round(
                meters["n_correct"].sum * 100.0 / meters["total"].sum, 3) if meters["total"].sum > 0 else float("nan"))

    @staticmethod
    def logging_outputs_can_be_summed() -> bool:
        return True
