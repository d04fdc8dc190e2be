"""Train one student for a fixed number of SGD steps with a chosen loss.

The loop mirrors the functional unroll of the teacher episodes step for step
(same batches by index, same SGD update), so a student taught by a fixed
teacher here follows exactly the trajectory the teacher was trained on.
Optionally the teacher keeps learning online: every `online_every` steps, a
`lookahead`-step hypergradient from the live student updates it.
Under torchrun the stream and the dev/test batches are this process's shards
(see distributed.py); gradients and evaluations are reduced over processes.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from fairseq_l2t.dev_objectives import DevObjective
from fairseq_l2t.example_weights import lookahead_example_weights
from fairseq_l2t.functional_student import FunctionalStudent, SGDConfig
from fairseq_l2t.online import lookahead_hypergradient
from fairseq_l2t.state_features import StudentState
from fairseq_l2t.teacher import Teacher

from ..data.batches import BatchSource
from .distributed import average_gradients, check_teacher, max_over_ranks, sync_teacher_grads, unroll_syncs
from .eval_metrics import evaluate
from .student_losses import StudentLoss

Batches = Sequence[tuple[Tensor, Tensor]]


@dataclass(frozen=True)
class OnlineTeaching:
    """Keep training the teacher while the student trains (for long runs); its state is the loss's controller."""

    every: int
    lookahead: int
    dev_objective: DevObjective
    dev_batches: Batches
    engine: str = "stored"


@dataclass(frozen=True)
class ExampleReweighting:
    """Learning to reweight examples: every step's example weights from a lookahead on a batch of trusted data
    (`trusted.batch_at(step)`: the reward half of dev, never the selection half)."""

    trusted: BatchSource

    def weights(self, model: nn.Module, inputs: Tensor, target: Tensor, step: int) -> Tensor:
        student = FunctionalStudent(model)
        named = dict(model.named_parameters())
        trusted_inputs, trusted_target = self.trusted.batch_at(step)
        return lookahead_example_weights(student, tuple(named[n] for n in student.param_names),
                                         dict(model.named_buffers()), inputs, target, trusted_inputs, trusted_target)


@dataclass
class StudentRun:
    history: list[dict] = field(default_factory=list)
    loss_snapshots: list[dict] = field(default_factory=list)
    seconds: float = 0.0  # training wall time so far, carried across resumes
    # the dev-selected checkpoint: the evaluation with the lowest selection-half error so far (the first of equals),
    # as {"step", "selection_dev_error", "model_state"}; None until the first evaluation with a selection half
    selected: dict | None = None

    def offer(self, step: int, selection_error: float, model: nn.Module) -> None:
        """Keep `model`'s weights as the selected checkpoint if its selection-half error is the lowest so far."""
        if self.selected is None or selection_error < self.selected["selection_dev_error"]:
            self.selected = {"step": step, "selection_dev_error": selection_error,
                             "model_state": {k: v.detach().clone() for k, v in model.state_dict().items()}}

    def errors(self, final_test_error: float, selected_test_error: float) -> dict:
        """The errors of a run's summary.json: the last evaluation's and, under `selected`, the dev-selected
        checkpoint's (every student run, fresh or kept, writes them alike)."""
        final = self.history[-1]
        chosen = next(row for row in self.history if row["step"] == self.selected["step"])
        return {"dev_error": 1 - final["dev_accuracy"], "reward_dev_error": final["reward_dev_error"],
                "selection_dev_error": final["selection_dev_error"], "test_error": final_test_error,
                "selected": {"step": chosen["step"], "dev_error": 1 - chosen["dev_accuracy"],
                             "reward_dev_error": chosen["reward_dev_error"],
                             "selection_dev_error": chosen["selection_dev_error"], "test_error": selected_test_error}}


def train_student(
    model: nn.Module,
    stream: BatchSource,
    steps: int,
    sgd: SGDConfig,
    loss: StudentLoss,
    state: StudentState,
    dev_batches: Batches,
    eval_every: int,
    test_batches: Batches | None = None,
    selection_batches: Batches | None = None,
    online: OnlineTeaching | None = None,
    reweighting: ExampleReweighting | None = None,
    on_eval: Callable[[dict], None] | None = None,
    progress: bool = True,
    optimizer: torch.optim.SGD | None = None,
    start_step: int = 0,
    run: StudentRun | None = None,
    after_step: Callable[[int, StudentRun], None] | None = None,
) -> StudentRun:
    """Train `model` in place up to `steps` SGD steps; evaluate every `eval_every` steps.

    Every evaluation scores `dev_batches` (the dev data the state reads: with a
    selection half, the reward half), the `selection_batches` if given (the
    selection half, whose lowest error picks `run.selected`) and the
    `test_batches` if given (a test curve; a table scores test only at the
    end).  A resumed run passes the restored `start_step` and `run` (its history so
    far); `after_step(steps_done, run)` is where the caller saves checkpoints.
    """
    if steps < 1 or eval_every < 1:
        raise ValueError(f"steps and eval_every must be >= 1, got {steps} and {eval_every}")
    if not 0 <= start_step <= steps:
        raise ValueError(f"start_step must be in [0, {steps}], got {start_step}")
    optimizer = optimizer or torch.optim.SGD(model.parameters(), lr=sgd.lr, momentum=sgd.momentum,
                                             weight_decay=sgd.weight_decay)
    run = run if run is not None else StudentRun()
    started = time.perf_counter() - run.seconds
    model.train()
    bar = tqdm(range(start_step, steps), desc=f"student[{loss.name}]", disable=not progress, dynamic_ncols=True,
               initial=start_step, total=steps)
    for step in bar:
        if online is not None and step % online.every == 0 and step + online.lookahead <= steps:
            _online_teacher_update(model, optimizer, loss, state, stream, step, online)
        inputs, target = stream.batch_at(step)
        weights = reweighting.weights(model, inputs, target, step) if loss.reweights_examples else None
        lprobs = F.log_softmax(model(inputs), dim=-1)
        value = loss(lprobs, target, state, weights)
        # decided over all processes: one whose slice overflowed must not stop alone (the others would hang)
        finite = bool(torch.isfinite(value))
        if max_over_ranks(int(not finite)):
            what = "non-finite in another process" if finite else value.item()
            raise FloatingPointError(f"the student's loss became {what} at step {step}; "
                                     f"lower --lr or check the teacher")
        optimizer.zero_grad(set_to_none=True)
        if weights is None or bool((weights > 0).any()):  # a reweighted batch with no positive weight is skipped
            value.backward()
            average_gradients(model)
            optimizer.step()
        state.observe_batch(lprobs, target)
        if (step + 1) % eval_every == 0 or step + 1 == steps:
            row, measure = _eval_row(model, step + 1, state, dev_batches, selection_batches, test_batches, started,
                                     online, loss)
            state.observe_dev(measure)
            if selection_batches is not None:
                run.offer(step + 1, row["selection_dev_error"], model)
            run.history.append(row)
            if loss.teacher is not None:
                run.loss_snapshots.append(loss_snapshot(loss.teacher, state, step + 1))
            bar.set_postfix(dev_acc=f"{row['dev_accuracy']:.4f}", train_loss=f"{row['train_loss']:.3f}",
                            **_non_finite_postfix(loss, online))
            if on_eval is not None:
                on_eval(row)
        run.seconds = time.perf_counter() - started
        if after_step is not None:
            after_step(step + 1, run)
    return run


def _online_teacher_update(model: nn.Module, optimizer: torch.optim.SGD, loss: StudentLoss, state: StudentState,
                           stream: BatchSource, step: int, online: OnlineTeaching) -> None:
    batches = [stream.batch_at(step + i) for i in range(online.lookahead)]
    result = lookahead_hypergradient(model, optimizer, loss.teacher, state, batches, online.dev_batches,
                                     online.dev_objective, engine=online.engine, **unroll_syncs())
    sync_teacher_grads(result)
    where = f"the online update before student step {step}"
    loss.controller.step([result], where)
    loss.controller.raise_if_exhausted()
    check_teacher(loss.teacher, where)


def _eval_row(model: nn.Module, step: int, state: StudentState, dev_batches: Batches,
              selection_batches: Batches | None, test_batches: Batches | None, started: float,
              online: OnlineTeaching | None, loss: StudentLoss) -> tuple[dict, float]:
    """The log row of an evaluation, and the dev accuracy that the state reads (of `dev_batches` alone).

    With a selection half, the row's dev loss and accuracy are those of both halves together."""
    dev = evaluate(model, dev_batches)
    row = {
        "step": step,
        "train_loss": state.train_loss if state.train_loss is not None else math.nan,
        "train_accuracy": state.train_accuracy if state.train_accuracy is not None else math.nan,
        "dev_loss": dev["loss"], "dev_accuracy": dev["accuracy"],
    }
    if selection_batches is not None:
        chosen = evaluate(model, selection_batches)
        count = dev["count"] + chosen["count"]
        row.update(dev_loss=(dev["loss"] * dev["count"] + chosen["loss"] * chosen["count"]) / count,
                   dev_accuracy=(dev["accuracy"] * dev["count"] + chosen["accuracy"] * chosen["count"]) / count,
                   reward_dev_error=dev["error"], selection_dev_error=chosen["error"])
    if test_batches is not None:
        test = evaluate(model, test_batches)
        row.update(test_loss=test["loss"], test_accuracy=test["accuracy"])
    if loss.controller is not None:
        row["teacher_non_finite_phi"] = loss.controller.outputs.total
    if online is not None:
        row.update(teacher_updates=loss.controller.updates,
                   teacher_skipped_non_finite=loss.controller.hypergradients.total)
    row["seconds"] = time.perf_counter() - started
    return row, dev["accuracy"]


def _non_finite_postfix(loss: StudentLoss, online: OnlineTeaching | None) -> dict:
    """Progress-bar counters of replaced teacher outputs and skipped online updates (only when there are any)."""
    controller = loss.controller
    counts = {"nonfinite_phi": controller.outputs.total if controller else 0,
              "skipped_updates": controller.hypergradients.total if online else 0}
    return {name: count for name, count in counts.items() if count}


@torch.no_grad()
def loss_snapshot(teacher: Teacher, state: StudentState, step: int) -> dict:
    """The loss `teacher` hands out at the student's `state` (its phi, dense W, gates): one loss_trace.pt entry."""
    param = next(teacher.parameters())
    features = state.features(param.dtype, param.device)
    phi = teacher(features)
    small = teacher.num_classes <= 200
    structure = teacher.structure
    return {"step": step, "features": features.cpu(), "gates": teacher.gates(features).cpu(),
            "W": structure.dense(phi).cpu() if small else None,
            "W_base": structure.dense(structure.init_params(param.dtype)).cpu() if small else None,
            "b": phi["b"].cpu() if "b" in phi else None,
            "phi": {k: v.detach().cpu() for k, v in phi.items()} if small else None}
