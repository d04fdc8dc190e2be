"""Train the teacher by episodes along whole student trainings.

A round trains `students` fresh students (new inits, new batch orders) side
by side for `steps_per_round` SGD steps under the current teacher.  The round
is cut into episodes of `episode_steps` steps; after each episode the exact
hypergradients of the dev objective through that episode, averaged over the
students, update the teacher, and every student continues from where the
episode left it.  So the teacher sees students at every stage of training,
with the same state features it will read when it later teaches a new student
from scratch.  With steps_per_round equal to episode_steps and CE pretraining,
every round is one episode from a pretrained student and, with same_student,
the same student and batches every round: the authors' demo protocol.

Under torchrun each process unrolls its slice of every batch with a mean
gradient sync, on its share of the dev split (dev objective summed over
processes): every process gets the 1-process hypergradient, and the teacher
stays bit-identical across processes (checked after every update).
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from fairseq_l2t.dev_objectives import get_dev_objective
from fairseq_l2t.functional_student import FunctionalStudent, SGDConfig, StudentSnapshot
from fairseq_l2t.hypergradient import HypergradResult, Unroll, hypergradient
from fairseq_l2t.non_finite import DEFAULT_LIMIT, all_finite
from fairseq_l2t.state_features import StudentState
from fairseq_l2t.teacher import Teacher
from fairseq_l2t.teacher_controller import TeacherController, mean_hypergradient

from ..data.batches import BatchSource, BatchStream
from ..data.image_sets import ImageSplits
from .distributed import check_teacher, shard_stream, sharded_eval_batches, state_sync, sync_teacher_grads, unroll_syncs
from .eval_metrics import evaluate
from .models import build_model
from .rng_state import rng_state, set_rng_state
from .student_loop import Batches, train_student
from .student_losses import StudentLoss


@dataclass(frozen=True)
class TeacherTrainingConfig:
    model: str
    sgd: SGDConfig
    batch_size: int = 64
    rounds: int = 2
    steps_per_round: int = 1000
    episode_steps: int = 50
    pretrain_steps: int = 0
    engine: str = "stored"
    snapshots: int = 8
    teacher_lr: float = 1e-3
    teacher_optimizer: str = "adam"
    dev_objective: str = "smooth_error"
    dev_batch_size: int = 500
    max_grad_norm: float = 0.0
    same_student: bool = False
    students: int = 1
    seed: int = 0
    max_non_finite: int = DEFAULT_LIMIT

    def __post_init__(self):
        for name in ("rounds", "steps_per_round", "episode_steps", "batch_size", "dev_batch_size", "max_non_finite",
                     "students"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.steps_per_round % self.episode_steps:
            raise ValueError(f"steps_per_round ({self.steps_per_round}) must be a multiple of episode_steps "
                             f"({self.episode_steps})")
        if not self.teacher_lr > 0:
            raise ValueError(f"teacher_lr must be positive, got {self.teacher_lr}")
        get_dev_objective(self.dev_objective)


def train_teacher(
    teacher: Teacher,
    splits: ImageSplits,
    config: TeacherTrainingConfig,
    device: torch.device,
    state_extras: tuple[str, ...] = (),
    on_episode: Callable[[dict], None] | None = None,
    progress: bool = True,
    resume: dict | None = None,
    after_episode: Callable[[dict], None] | None = None,
    on_student: Callable[[int, int, nn.Module, StudentState], None] | None = None,
) -> TeacherController:
    """Update `teacher` in place over config.rounds rounds; returns its controller (for checkpoints).

    after_episode(progress) gets everything a resumed run needs (round,
    episode, the teacher's controller state, live students, RNG); passing that
    dict back as `resume` continues exactly where it was taken.  on_student(round,
    student step, module, state features) sees the first student of the cohort after every
    episode (to keep it: image_cls/run_files/kept_student.py).
    """
    controller = teacher_controller(teacher, config)
    dev_batches = sharded_eval_batches(splits.dev, config.dev_batch_size, splits.mean, splits.std, device)
    objective = get_dev_objective(config.dev_objective)
    episodes = config.steps_per_round // config.episode_steps
    start_round, start_episode = 0, 0
    if resume is not None:
        start_round, start_episode = _restore_teacher_side(resume, controller, episodes)
    bar = tqdm(total=config.rounds * episodes, initial=start_round * episodes + start_episode,
               desc="teacher episodes", disable=not progress, dynamic_ncols=True)
    started = time.perf_counter() - (resume["seconds"] if resume is not None else 0.0)
    for round_index in range(start_round, config.rounds):
        mid_round = round_index == start_round and start_episode > 0
        cohort = [_LiveStudent.fresh(splits, config, _student_index(config, round_index, k), device, dev_batches,
                                     state_extras, pretrain=not mid_round) for k in range(config.students)]
        if mid_round:
            _restore_student_side(resume, cohort, device)
        for episode in range(start_episode if mid_round else 0, episodes):
            offset = config.pretrain_steps + episode * config.episode_steps
            where = f"round {round_index}, episode {episode}"
            results = [_episode_hypergradient(live, teacher, config, offset, dev_batches, objective, where)
                       for live in cohort]
            grad_norm = float(torch.cat([g.reshape(-1) for g in mean_hypergradient(results)]).norm())
            finite = controller.step(results, where)
            controller.raise_if_exhausted()
            check_teacher(teacher, where)
            accuracies = [live.advance(result, dev_batches) for live, result in zip(cohort, results)]
            if on_student is not None:
                on_student(round_index, offset + config.episode_steps, cohort[0].model, cohort[0].state)
            dev_objective = sum(r.dev_objective for r in results) / len(results)
            row = {"round": round_index, "episode": episode, "student_step": offset + config.episode_steps,
                   "dev_objective": dev_objective, "dev_accuracy": sum(accuracies) / len(accuracies),
                   "hypergradient_norm": grad_norm, "skipped_non_finite": int(not finite),
                   "seconds": time.perf_counter() - started}
            bar.update(1)
            bar.set_postfix(M=f"{dev_objective:.4f}", dev_acc=f"{row['dev_accuracy']:.4f}",
                            **({"skipped": controller.skipped} if controller.skipped else {}))
            if on_episode is not None:
                on_episode(row)
            if after_episode is not None:
                after_episode({"round": round_index, "episode": episode + 1, "controller": controller.state_dict(),
                               "student_states": [live.state.state_dict() for live in cohort],
                               "students": [live.snapshot_dict() for live in cohort], "rng": rng_state(),
                               "seconds": time.perf_counter() - started})
    bar.close()
    return controller


def teacher_controller(teacher: Teacher, config: "TeacherTrainingConfig") -> TeacherController:
    return TeacherController(teacher, config.teacher_lr, config.teacher_optimizer, max_grad_norm=config.max_grad_norm,
                             max_non_finite=config.max_non_finite)


@dataclass
class _LiveStudent:
    """One of a round's students: its module, batches, state features and current snapshot."""

    model: nn.Module
    stream: BatchSource
    state: StudentState
    functional: FunctionalStudent
    snapshot: StudentSnapshot

    @classmethod
    def fresh(cls, splits: ImageSplits, config: "TeacherTrainingConfig", index: int, device: torch.device,
              dev_batches: Batches, state_extras: tuple[str, ...], pretrain: bool) -> "_LiveStudent":
        model, stream, state, optimizer = fresh_student(splits, config, index, device, dev_batches,
                                                        state_extras, pretrain)
        functional = FunctionalStudent(model)
        return cls(model, stream, state, functional, functional.snapshot(optimizer))

    def advance(self, result: HypergradResult, dev_batches: Batches) -> float:
        """Continue from the episode's end; returns (and records in the state) the new dev accuracy."""
        self.snapshot, self.state = result.final, result.tracker
        self.functional.load(self.snapshot)
        accuracy = evaluate(self.model, dev_batches)["accuracy"]
        self.state.observe_dev(accuracy)
        return accuracy

    def snapshot_dict(self) -> dict:
        return {"params": list(self.snapshot.params), "velocity": list(self.snapshot.velocity),
                "buffers": self.snapshot.buffers}


def _student_index(config: "TeacherTrainingConfig", round_index: int, k: int) -> int:
    """Which fresh student (seed offset) is student k of a round: the same ones every round with same_student."""
    return k if config.same_student else round_index * config.students + k


def _episode_hypergradient(live: _LiveStudent, teacher: Teacher, config: "TeacherTrainingConfig", offset: int,
                           dev_batches: Batches, objective, where: str) -> HypergradResult:
    """One student's exact hypergradient through the episode that starts at student step `offset`."""
    unroll = Unroll(student=live.functional, teacher=teacher, sgd=config.sgd, steps=config.episode_steps,
                    batch_at=lambda t: live.stream.batch_at(offset + t), dev_batches=dev_batches,
                    dev_objective=objective, tracker=live.state, **unroll_syncs())
    result = hypergradient(unroll, live.snapshot, engine=config.engine, snapshots=config.snapshots)
    sync_teacher_grads(result)
    if not all_finite(result.final.params):
        raise FloatingPointError(f"the student's parameters became non-finite in {where}; lower --lr")
    return result


def check_resume(teacher: Teacher, splits: ImageSplits, config: TeacherTrainingConfig, device: torch.device,
                 state_extras: tuple[str, ...], resume: dict) -> None:
    """Load `resume` into throwaway copies of what train_teacher would restore it into, so that a checkpoint
    that does not fit (KeyError, RuntimeError, ValueError, TypeError) is refused before the caller writes
    anything, not with a traceback mid-run.  The RNGs are left as they were."""
    teacher = copy.deepcopy(teacher)
    episodes = config.steps_per_round // config.episode_steps
    start_round, start_episode = _restore_teacher_side(resume, teacher_controller(teacher, config), episodes)
    if not 0 <= start_round < config.rounds:
        raise ValueError(f"round {start_round} is outside this run's {config.rounds} rounds")
    if not math.isfinite(resume["seconds"]):
        raise ValueError(f"the run's wall time so far is {resume['seconds']}")
    if start_episode > 0:
        rng = rng_state()
        try:
            cohort = []
            for _ in range(config.students):
                model = build_model(config.model, splits.num_classes, splits.in_channels,
                                    splits.image_size).to(device)
                state = StudentState(splits.num_classes, total_steps=config.pretrain_steps + config.steps_per_round,
                                     extras=state_extras)
                functional = FunctionalStudent(model)
                cohort.append(_LiveStudent(model, None, state, functional, None))
            _restore_student_side(resume, cohort, device)
        finally:
            set_rng_state(rng)


def _restore_teacher_side(resume: dict, controller: TeacherController, episodes: int) -> tuple[int, int]:
    """Load the teacher's controller (weights, optimizer, counters); returns the (round, episode) to continue at."""
    controller.load_state_dict(resume["controller"])
    return divmod(resume["round"] * episodes + resume["episode"], episodes)


def _restore_student_side(resume: dict, cohort: list[_LiveStudent], device: torch.device) -> None:
    """Load the mid-round students, their state features and the RNGs."""
    if len(resume["students"]) != len(cohort):
        raise ValueError(f"the checkpoint holds {len(resume['students'])} students per round, this run "
                         f"{len(cohort)}")
    for live, saved, state in zip(cohort, resume["students"], resume["student_states"]):
        live.snapshot = StudentSnapshot(*(_to_device(saved[k], device) for k in ("params", "velocity", "buffers")))
        live.functional.load(live.snapshot)
        live.state.load_state_dict(state)
    set_rng_state(resume["rng"])


def fresh_student(splits: ImageSplits, config: TeacherTrainingConfig, round_index: int, device: torch.device,
                  dev_batches: Batches, state_extras: tuple[str, ...] = (),
                  pretrain: bool = True) -> tuple[nn.Module, BatchSource, StudentState, torch.optim.SGD]:
    """Round `round_index`'s student (CE-pretrained if config says so and `pretrain`): model, batch stream, state,
    SGD optimizer.

    Its seed (init and batch order) is seed * 1000 + round, never the seed of
    the students that the comparison evaluates.  A resumed round overwrites
    the student, so it skips the pretraining.
    """
    seed = config.seed * 1000 + round_index
    torch.manual_seed(seed)
    model = build_model(config.model, splits.num_classes, splits.in_channels, splits.image_size).to(device)
    stream = shard_stream(BatchStream(splits.train, config.batch_size, seed, splits.mean, splits.std, splits.augment,
                                      device))
    total = config.pretrain_steps + config.steps_per_round
    state = StudentState(splits.num_classes, total_steps=total, extras=state_extras, sync=state_sync())
    sgd = config.sgd
    optimizer = torch.optim.SGD(model.parameters(), lr=sgd.lr, momentum=sgd.momentum, weight_decay=sgd.weight_decay)
    if config.pretrain_steps and pretrain:
        train_student(model, stream, config.pretrain_steps, sgd, StudentLoss("ce"), state, dev_batches,
                      eval_every=config.pretrain_steps, progress=False, optimizer=optimizer)
    return model, stream, state, optimizer


def _to_device(tensors: dict[str, Tensor] | Sequence[Tensor],
               device: torch.device) -> dict[str, Tensor] | tuple[Tensor, ...]:
    if isinstance(tensors, dict):
        return {k: v.to(device) for k, v in tensors.items()}
    return tuple(t.to(device) for t in tensors)
