"""The student a teacher run trains while its teacher learns, kept as a student run of its own.

A fresh student taught by the finished teacher meets, early in training, a
teacher that was last rewarded for late-training states; the student of the
teacher's own last round met every teacher as it was when that stage was
rewarded.  `l2t-image-train-teacher --keep-student` keeps that student: at
each episode end it is scored on the selection half of dev (which the teacher,
rewarded on the reward half, never sees), the checkpoint with the lowest
selection-half error is kept, and OUT/student/ ends with the files of a
student run (checkpoint_selected.pt, checkpoint.pt, summary.json, log.csv,
and loss_trace.pt: the loss the teacher hands out at each episode end), so the
noisy comparison's guard and table read it like any other run.
"""
from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

from torch import nn

from fairseq_l2t.state_features import StudentState
from fairseq_l2t.teacher import Teacher
from fairseq_l2t.teacher_controller import teacher_payload

from ..data.image_sets import ImageSplits
from ..training.eval_metrics import evaluate
from ..training.student_loop import Batches, StudentRun, loss_snapshot
from .checkpoints import save_atomic, save_finite_on_main
from .csv_log import CsvLog


class KeptStudent:
    """Scores the last round's student at every episode end; at the round's last step it writes that student's
    run into `out` (single-process: the teacher CLI refuses --keep-student under torchrun)."""

    def __init__(self, out: Path, args: argparse.Namespace, teacher: Teacher, splits: ImageSplits, reward: Batches,
                 selection: Batches, test: Batches, last_round: int, steps: int, resumed: dict | None = None):
        """`splits`: the whole dev split (its size is recorded); `steps`: the student step of the round's end."""
        self.out, self.args, self.splits, self.last_round, self.steps = out, args, splits, last_round, steps
        self.teacher = teacher
        self.reward, self.selection, self.test = reward, selection, test
        self.run = StudentRun(**resumed) if resumed is not None else StudentRun()
        self.log: CsvLog | None = None
        self.summary: dict | None = None

    def __call__(self, round_index: int, step: int, model: nn.Module, state: StudentState) -> None:
        """After an episode of round `round_index`: the student at `step` (only the last round's is kept)."""
        if round_index != self.last_round:
            return
        reward, selection = evaluate(model, self.reward), evaluate(model, self.selection)
        row = {"step": step, "dev_accuracy": (reward["accuracy"] * reward["count"] + selection["accuracy"]
                                              * selection["count"]) / (reward["count"] + selection["count"]),
               "reward_dev_error": reward["error"], "selection_dev_error": selection["error"]}
        if self.log is None:  # a resumed run's rows up to its checkpoint, then this one
            self.log = CsvLog(self.out / "log.csv", self.run.history)
        self.run.history.append(row)
        self.run.offer(step, row["selection_dev_error"], model)
        self.run.loss_snapshots.append(loss_snapshot(self.teacher, state, step))
        self.log(row)
        if step == self.steps:
            self.summary = self._write(model)

    def state_dict(self) -> dict:
        """What a resumed teacher run needs to go on keeping the same student."""
        return {"history": list(self.run.history), "selected": self.run.selected,
                "loss_snapshots": list(self.run.loss_snapshots)}

    def _write(self, model: nn.Module) -> dict:
        """checkpoint.pt (the student at the end), checkpoint_selected.pt and summary.json, in
        l2t-image-train-student's formats (the teacher in the checkpoints is the finished one); returns the
        summary."""
        saved = {"kind": "student", "model": self.args.model, "dataset": self.args.dataset, "seed": self.args.seed,
                 "num_classes": self.splits.num_classes, "args": vars(self.args), "optimizer_state": None,
                 "teacher": teacher_payload(self.teacher)}
        save_atomic({"kind": "loss_trace", "snapshots": self.run.loss_snapshots}, self.out / "loss_trace.pt")
        save_finite_on_main({**saved, "step": self.steps, "model_state": model.state_dict()},
                            self.out / "checkpoint.pt")
        chosen = self.run.selected
        selected_model = copy.deepcopy(model)
        selected_model.load_state_dict(chosen["model_state"])
        save_finite_on_main({**saved, "step": chosen["step"], "model_state": chosen["model_state"], "selected": True},
                            self.out / "checkpoint_selected.pt")
        summary = {"loss": "kept_student", "model": self.args.model, "dataset": self.args.dataset,
                   "seed": self.args.seed, "steps": self.steps,
                   **self.run.errors(evaluate(model, self.test)["error"], evaluate(selected_model, self.test)["error"]),
                   "label_noise": self.splits.noise, "dev_images": len(self.splits.dev), "processes": 1}
        (self.out / "summary.json").write_text(json.dumps(summary))
        return summary
