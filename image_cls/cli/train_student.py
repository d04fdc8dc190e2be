"""Train a student image classifier with cross-entropy, label smoothing, online
label smoothing, or a saved L2T-DLF teacher (optionally still learning online),
for any number of steps.  Writes OUT/log.csv, OUT/checkpoint.pt (student +
teacher), OUT/summary.json (final dev, dev-half and test errors) and, when
taught, OUT/loss_trace.pt (the loss the teacher handed out at each eval), and
OUT/tensorboard/ (the log, the teacher's gates and W as TensorBoard scalars and
images) unless --no-tensorboard.
While it runs, OUT/checkpoint_last.pt (every --save-every steps) lets --resume
finish a killed run exactly as if it had not stopped.
Data-parallel under torchrun (gloo): --batch-size is the global batch."""
from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

import torch

from fairseq_l2t.dev_objectives import DEV_OBJECTIVES, get_dev_objective
from fairseq_l2t.distributed import world_size
from fairseq_l2t.state_features import StudentState
from fairseq_l2t.teacher_controller import OPTIMIZERS, TeacherController, teacher_payload

from ..data.batches import BatchStream
from ..data.image_sets import DatasetUnavailable
from ..data.splits import dev_halves
from ..run_files.checkpoints import (
    CheckpointError,
    load_checkpoint,
    save_atomic,
    save_finite_on_main,
    teacher_from_payload,
)
from ..run_files.csv_log import CsvLog
from ..run_files.resume import LAST_CHECKPOINT, load_progress, unfit_message
from ..run_files.tensorboard_log import TensorBoardLog, add_tensorboard_arg
from ..training.distributed import init_from_env, is_main, shard_stream, sharded_eval_batches, state_sync
from ..training.eval_metrics import evaluate
from ..training.models import build_model
from ..training.online_label_smoothing import OnlineLabelSmoothing
from ..training.rng_state import rng_state, seed_everything, set_rng_state
from ..training.gold_loss_correction import estimate_transition
from ..training.student_loop import ExampleReweighting, OnlineTeaching, StudentRun, train_student
from ..training.student_losses import LOSS_NAMES, StudentLoss
from .common import (
    add_data_args,
    add_durability_args,
    add_run_args,
    add_student_args,
    fail,
    load_data,
    open_unit_float,
    positive_float,
    positive_int,
    resolve_device,
    sgd_config,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="l2t-image-train-student", description=__doc__,
        epilog="example: l2t-image-train-student --loss teacher --teacher runs/teacher/teacher.pt --steps 1500 "
               "--out runs/student-l2t")
    add_data_args(parser)
    add_student_args(parser)
    group = parser.add_argument_group("loss")
    group.add_argument("--loss", choices=LOSS_NAMES, default="ce",
                       help="ce: cross-entropy; label_smoothing; online_label_smoothing (Zhang et al. 2021: soft "
                            "targets from the student's own correct predictions of the previous epoch); gce: the "
                            "generalised cross-entropy (1 - p_y^q) / q (Zhang & Sabuncu 2018); glc: Gold Loss "
                            "Correction (Hendrycks et al. 2018), forward correction with the noise estimated on the "
                            "reward half of dev by the model of --glc-model; l2rw: learning to reweight examples "
                            "(Ren et al. 2018), per-example weights from a one-step lookahead on reward-half "
                            "batches; teacher: the loss a saved teacher hands out")
    group.add_argument("--label-smoothing", type=open_unit_float, default=0.1,
                       help="epsilon for label_smoothing, in (0, 1) (default: %(default)s)")
    group.add_argument("--gce-q", type=gce_q, default=0.7, help="q of gce, in (0, 1] (default: %(default)s)")
    group.add_argument("--glc-model", metavar="CHECKPOINT",
                       help="glc: a student checkpoint trained with cross-entropy on the same noisy labels (e.g. its "
                            "checkpoint_selected.pt), whose predictions on the reward half of dev estimate the noise; "
                            "the estimate is written to OUT/transition.json")
    group.add_argument("--teacher", help="teacher checkpoint (teacher.pt from l2t-image-train-teacher)")
    group.add_argument("--online-every", type=positive_int, default=None,
                       help="keep training the teacher: one lookahead hypergradient update every N student steps")
    group.add_argument("--lookahead", type=positive_int, default=5, help="lookahead steps k for --online-every")
    group.add_argument("--teacher-lr", type=positive_float, default=1e-3,
                       help="learning rate of the online teacher updates (default: %(default)s)")
    group.add_argument("--teacher-optimizer", choices=OPTIMIZERS, default="adam",
                       help="the teacher's own optimizer for online updates (default: %(default)s)")
    group.add_argument("--dev-objective", choices=sorted(DEV_OBJECTIVES), default="smooth_error",
                       help="dev objective for online teacher updates (default: %(default)s)")
    group = parser.add_argument_group("schedule")
    group.add_argument("--steps", type=positive_int, default=1500, help="student SGD steps (default: %(default)s)")
    group.add_argument("--eval-every", type=positive_int, default=50,
                       help="dev evaluation period: both halves of dev are scored, the reward half's accuracy feeds "
                            "the teacher's state and the selection half's lowest error picks the dev-selected "
                            "checkpoint (OUT/checkpoint_selected.pt) (default: %(default)s)")
    group.add_argument("--test-curve", action="store_true",
                       help="score test at every evaluation too (for learning-curve plots; without it test is "
                            "scored once at the end, at the final and at the dev-selected checkpoint)")
    group.add_argument("--out", required=True, help="output folder")
    add_durability_args(parser, "steps", default_every=500)
    add_run_args(parser)
    add_tensorboard_arg(parser)
    return parser


def gce_q(text: str) -> float:
    value = positive_float(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text}")
    return value


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    if args.loss == "teacher" and not args.teacher:
        fail("--loss teacher needs --teacher PATH (a teacher.pt from l2t-image-train-teacher)")
    if (args.loss == "glc") != bool(args.glc_model):
        fail("--loss glc needs --glc-model CHECKPOINT (a cross-entropy student on the same labels), and "
             "--glc-model needs --loss glc")
    if args.loss == "l2rw" and world_size() > 1:
        fail("--loss l2rw is single-process (its example weights are normalised over the whole batch)")
    if args.online_every and args.loss != "teacher":
        fail("--online-every only makes sense with --loss teacher")
    device = resolve_device(args.device)
    sgd = sgd_config(args)
    init_from_env()
    out = Path(args.out)
    try:
        resumed = load_progress(out, "student", args) if args.resume else None
        splits = load_data(args)
        teacher_ckpt = load_checkpoint(args.teacher, "teacher") if args.loss == "teacher" else None
        glc_ckpt = load_checkpoint(args.glc_model, "student") if args.loss == "glc" else None
        reward_half, selection_half = dev_halves(splits.dev, args.seed)
    except (DatasetUnavailable, CheckpointError, ValueError) as err:
        fail(str(err))
    state_extras = tuple(teacher_ckpt.get("state_extras", ())) if teacher_ckpt else ()
    state = StudentState(splits.num_classes, total_steps=args.steps, extras=state_extras, sync=state_sync())
    teacher = None
    if teacher_ckpt is not None:
        try:
            teacher = teacher_from_payload(teacher_ckpt["teacher"], splits.num_classes, state.num_features).to(device)
        except CheckpointError as err:
            fail(str(err))
    seed_everything(args.seed)
    try:
        model = build_model(args.model, splits.num_classes, splits.in_channels, splits.image_size).to(device)
    except ValueError as err:  # e.g. images too small for the model
        fail(str(err))
    try:
        full_stream = BatchStream(splits.train, args.batch_size, args.seed, splits.mean, splits.std, splits.augment,
                                  device)
    except ValueError as err:
        fail(f"--batch-size: {err}")
    stream = shard_stream(full_stream)
    reward_dev, selection_dev = (sharded_eval_batches(half, 500, splits.mean, splits.std, device)
                                 for half in (reward_half, selection_half))
    test = sharded_eval_batches(splits.test, 500, splits.mean, splits.std, device)
    transition = None
    if glc_ckpt is not None:
        transition = _glc_transition(glc_ckpt, args, splits, reward_dev, device)
    reweighting = None
    if args.loss == "l2rw":  # trusted batches of the training batch size (the whole half if it is smaller)
        reweighting = ExampleReweighting(BatchStream(reward_half, min(args.batch_size, len(reward_half)),
                                                     args.seed + 1, splits.mean, splits.std, False, device))
    controller = (TeacherController(teacher, args.teacher_lr, args.teacher_optimizer,
                                    max_non_finite=args.max_non_finite)
                  if teacher is not None else None)
    online = (OnlineTeaching(args.online_every, args.lookahead, get_dev_objective(args.dev_objective), reward_dev)
              if args.online_every else None)
    online_smoothing = (OnlineLabelSmoothing(splits.num_classes, full_stream.batches_per_epoch)
                        if args.loss == "online_label_smoothing" else None)
    loss = StudentLoss(args.loss, args.label_smoothing, controller, online_smoothing, args.gce_q, transition)
    optimizer = torch.optim.SGD(model.parameters(), lr=sgd.lr, momentum=sgd.momentum, weight_decay=sgd.weight_decay)
    run, start = StudentRun(), 0
    if resumed is not None:
        try:
            run, start = _restore(resumed, model, optimizer, state, controller, online_smoothing), resumed["step"]
        except (KeyError, RuntimeError, ValueError, TypeError) as err:
            fail(unfit_message(out, err))
    log = CsvLog(out / "log.csv", run.history) if is_main() else None
    board = TensorBoardLog(out, is_main() and not args.no_tensorboard, start + 1 if resumed is not None else None)

    def on_eval(row: dict) -> None:
        if log is not None:
            log(row)
        board.student_eval(row, run.loss_snapshots)

    def checkpoint(step: int, progress: StudentRun | None = None) -> dict:
        saved = {
            "kind": "student", "model": args.model, "dataset": args.dataset, "seed": args.seed,
            "num_classes": splits.num_classes, "step": step, "args": vars(args),
            "model_state": model.state_dict(), "optimizer_state": optimizer.state_dict(),
            "student_state": state.state_dict(), "state_extras": list(state_extras),
            "teacher": teacher_payload(teacher) if teacher is not None else None,
        }
        if progress is not None:
            saved.update(progress={"controller": controller.state_dict() if controller else None,
                                   "online_smoothing": online_smoothing.state_dict() if online_smoothing else None,
                                   "rng": rng_state(), "seconds": progress.seconds, "selected": progress.selected},
                         history=progress.history, loss_snapshots=progress.loss_snapshots)
        return saved

    def save_progress(step: int, progress: StudentRun) -> None:
        if args.save_every and step % args.save_every == 0 and step < args.steps:
            save_finite_on_main(checkpoint(step, progress), out / LAST_CHECKPOINT)

    try:
        run = train_student(model, stream, args.steps, sgd, loss, state, reward_dev, args.eval_every,
                            test_batches=test if args.test_curve else None, selection_batches=selection_dev,
                            online=online, reweighting=reweighting, on_eval=on_eval,
                            progress=not args.no_progress and is_main(), optimizer=optimizer, start_step=start,
                            run=run, after_step=save_progress)
        save_finite_on_main(checkpoint(args.steps), out / "checkpoint.pt")
        final_test = evaluate(model, test)
        selected_model = copy.deepcopy(model)
        selected_model.load_state_dict(run.selected["model_state"])
        save_finite_on_main({**checkpoint(run.selected["step"]), "model_state": run.selected["model_state"],
                             "optimizer_state": None, "selected": True}, out / "checkpoint_selected.pt")
    except (FloatingPointError, OSError) as err:
        fail(str(err))
    finally:
        board.close()
    if run.loss_snapshots and is_main():
        save_atomic({"kind": "loss_trace", "snapshots": run.loss_snapshots}, out / "loss_trace.pt")
    summary = {"loss": args.loss, "model": args.model, "dataset": args.dataset, "seed": args.seed,
               "steps": args.steps, **run.errors(final_test["error"], evaluate(selected_model, test)["error"]),
               "label_noise": splits.noise, "dev_images": len(splits.dev), "processes": world_size()}
    if not is_main():
        return summary
    (out / "summary.json").write_text(json.dumps(summary))
    (out / LAST_CHECKPOINT).unlink(missing_ok=True)
    print(json.dumps({k: v for k, v in summary.items() if k != "label_noise"}), file=sys.stdout)
    return summary


def _glc_transition(saved: dict, args: argparse.Namespace, splits, trusted, device) -> "torch.Tensor":
    """Gold Loss Correction's C from the --glc-model checkpoint on the reward half of dev, written to
    OUT/transition.json (a JSON list of rows: what --teacher-transition reads)."""
    if saved["num_classes"] != splits.num_classes or saved["dataset"] != args.dataset:
        fail(f"--glc-model {args.glc_model} was trained on {saved['dataset']} ({saved['num_classes']} classes), not "
             f"on this run's {args.dataset}")
    model = build_model(saved["model"], splits.num_classes, splits.in_channels, splits.image_size).to(device)
    model.load_state_dict(saved["model_state"])
    transition = estimate_transition(model, trusted, splits.num_classes)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "transition.json").write_text(json.dumps(transition.tolist()))
    return transition


def _restore(saved: dict, model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: StudentState,
             controller: TeacherController | None, online_smoothing: OnlineLabelSmoothing | None) -> StudentRun:
    """Load a periodic checkpoint into the live objects; returns the run's history so far."""
    model.load_state_dict(saved["model_state"])
    optimizer.load_state_dict(saved["optimizer_state"])
    state.load_state_dict(saved["student_state"])
    if controller is not None:
        controller.load_state_dict(saved["progress"]["controller"])
    if online_smoothing is not None:
        online_smoothing.load_state_dict(saved["progress"]["online_smoothing"])
    set_rng_state(saved["progress"]["rng"])
    return StudentRun(saved["history"], saved["loss_snapshots"], saved["progress"]["seconds"],
                      saved["progress"]["selected"])


def cli() -> None:
    """The console script: main() returns its summary for callers, which sys.exit would print as an error."""
    main()


if __name__ == "__main__":
    cli()
