"""Train an L2T-DLF teacher on an image-classification task and save it.

Each round trains a fresh student from scratch under the current teacher; every
--episode-steps student steps, the exact hypergradient of the dev objective
through those steps (reverse-mode differentiation with Hessian-vector products)
updates the teacher with Adam.  Writes OUT/teacher.pt (load it with
l2t-image-train-student --loss teacher --teacher OUT/teacher.pt) and
OUT/teacher_log.csv (one row per episode, also as TensorBoard scalars in
OUT/tensorboard/ unless --no-tensorboard); while it runs, OUT/checkpoint_last.pt
(every --save-every episodes) lets --resume finish a killed run exactly.
With --keep-student, OUT/student/ also holds the last round's student, taught
while the teacher learned, as a student run chosen on the selection half.
Data-parallel under torchrun (gloo): --batch-size is the global batch."""
from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from fairseq_l2t.dev_objectives import DEV_OBJECTIVES
from fairseq_l2t.distributed import world_size
from fairseq_l2t.hypergradient import ENGINES
from fairseq_l2t.state_features import EXTRA_FEATURES, StudentState
from fairseq_l2t.teacher import TEACHER_FORMS
from fairseq_l2t.teacher_controller import OPTIMIZERS
from fairseq_l2t.teacher_spec import STRUCTURES, TeacherSpec

from ..data.batches import check_batch_size
from ..data.image_sets import DatasetUnavailable
from ..data.splits import dev_halves
from ..run_files.checkpoints import CheckpointError, save_finite_on_main
from ..run_files.csv_log import CsvLog
from ..run_files.kept_student import KeptStudent
from ..run_files.resume import LAST_CHECKPOINT, load_progress, unfit_message
from ..run_files.tensorboard_log import TensorBoardLog, add_tensorboard_arg
from ..training.distributed import init_from_env, is_main, require_divisible, sharded_eval_batches
from ..training.models import build_model
from ..training.rng_state import seed_everything
from ..training.teacher_episodes import TeacherTrainingConfig, check_resume, train_teacher
from .common import (
    add_data_args,
    add_durability_args,
    add_run_args,
    add_student_args,
    fail,
    load_data,
    non_negative_float,
    open_unit_float,
    positive_float,
    positive_int,
    resolve_device,
    sgd_config,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="l2t-image-train-teacher", description=__doc__,
        epilog="example: l2t-image-train-teacher --model lenet --rounds 2 --steps-per-round 1500 "
               "--episode-steps 50 --out runs/teacher")
    add_data_args(parser)
    add_student_args(parser)
    group = parser.add_argument_group("teacher (the same --teacher-* names as fairseq's l2t_translation)")
    group.add_argument("--teacher-structure", "--structure", choices=STRUCTURES, default="dense",
                       help="the loss family: dense C x C W, or diagonal + rank-r (the paper's bilinear family, "
                            "unbounded below without --teacher-prob-floor); soft_target (well-posed: per-class "
                            "smoothing mass, where it goes, and weight); smoothing (well-posed, low capacity: one "
                            "smoothing mass and one loss scale); corrected (well-posed, for noisy labels: "
                            "forward correction, generalised cross-entropy and label smoothing, all scheduled by "
                            "the teacher) (default: %(default)s)")
    group.add_argument("--teacher-smoothing", type=unit_interval_float, default=None, metavar="EPS",
                       help="a well-posed teacher starts exactly at label smoothing EPS (default: 0, cross-entropy)")
    group.add_argument("--teacher-base", dest="teacher_smoothing", type=teacher_base, metavar="ce|label_smoothing=EPS",
                       help="the same as --teacher-smoothing, as ce or label_smoothing=EPS")
    group.add_argument("--teacher-robustness", type=closed_unit_float, default=None, metavar="Q",
                       help="corrected: start at the generalised cross-entropy with this q (default: 0, CE)")
    group.add_argument("--teacher-transition", default=None, metavar="FILE",
                       help="corrected: start at the forward correction with this row-stochastic C x C matrix, a "
                            "JSON list of rows (e.g. Gold Loss Correction's estimate; default: none, T = I)")
    group.add_argument("--teacher-rank", "--rank", type=positive_int, default=8,
                       help="rank r of the lowrank structure")
    group.add_argument("--teacher-fixed-scale", "--fixed-loss-scale", action="store_true",
                       help="well-posed structures: no loss scale (a = 1), so the teacher shapes the targets but "
                            "cannot act as a learning-rate factor")
    group.add_argument("--teacher-squash", "--squash", action="store_true",
                       help="use the paper's -sigmoid(z) loss network instead of -z (which is CE at init)")
    group.add_argument("--teacher-prob-floor", "--prob-floor", type=non_negative_float, default=None,
                       help="floor for non-target probabilities in the bilinear loss, which keeps negative W "
                            "entries from driving the unsquashed loss to -inf (0: no floor; default: 1e-4 for "
                            "dense and lowrank, 0 for the well-posed structures, which need none)")
    group.add_argument("--teacher-form", choices=TEACHER_FORMS, default="gate",
                       help="gate: phi = base + sum_g tanh(a_g . s) delta_g (the authors' demo); attention: a "
                            "softmax mix of G loss parameter sets picked by the state (the paper) "
                            "(default: %(default)s)")
    group.add_argument("--teacher-gates", "--gates", type=positive_int, default=2,
                       help="number of state-dependent gates (attention: loss parameter sets)")
    group.add_argument("--reward-dev", choices=("all", "half"), default="all",
                       help="all: reward the teacher on the whole dev split; half: on its reward half only, "
                            "keeping the selection half unseen for choosing between teacher and base loss "
                            "(default: %(default)s)")
    group.add_argument("--keep-student", action="store_true",
                       help="also keep the last round's student, taught while the teacher learned: its checkpoint "
                            "with the lowest selection-half error at an episode end, written as a student run to "
                            "OUT/student/ (needs --reward-dev half and --students 1; single-process)")
    group.add_argument("--state-features", nargs="+", choices=EXTRA_FEATURES, default=[], metavar="NAME",
                       help="optional groups added to the teacher's state: class_accuracy (per-class running "
                            "training accuracy, C features), confusion (the student's running soft confusion "
                            "between classes, C (C - 1) features)")
    group.add_argument("--teacher-lr", type=positive_float, default=1e-3,
                       help="learning rate of the teacher's optimizer (default: %(default)s)")
    group.add_argument("--teacher-optimizer", choices=OPTIMIZERS, default="adam",
                       help="the teacher's own optimizer (default: %(default)s)")
    group.add_argument("--teacher-max-grad-norm", "--max-grad-norm", type=non_negative_float, default=0.0,
                       help="clip the teacher's gradient norm (0: no clipping)")
    group.add_argument("--dev-objective", choices=sorted(DEV_OBJECTIVES), default="smooth_error",
                       help="smooth dev objective the teacher minimises (default: %(default)s)")
    group = parser.add_argument_group("episodes")
    group.add_argument("--rounds", type=positive_int, default=2, help="fresh students trained (default: %(default)s)")
    group.add_argument("--steps-per-round", type=positive_int, default=1500,
                       help="student steps per round; use the student budget you will teach with")
    group.add_argument("--episode-steps", type=positive_int, default=50,
                       help="T: student steps differentiated through per teacher update (default: %(default)s)")
    group.add_argument("--pretrain-steps", type=positive_int, default=None,
                       help="cross-entropy steps before the teacher takes over in each round")
    group.add_argument("--same-student", action="store_true",
                       help="restart every round from the same student and batches (the authors' demo protocol) "
                            "instead of a fresh student per round")
    group.add_argument("--students", type=positive_int, default=1,
                       help="fresh students trained side by side in each round; every teacher update averages "
                            "their hypergradients (costs K times the compute; default: %(default)s)")
    group.add_argument("--engine", choices=ENGINES, default="stored",
                       help="stored: all weights kept; checkpointed: memory flat in T; unrolled: naive autograd")
    group.add_argument("--snapshots", type=positive_int, default=8, help="snapshots of the checkpointed engine")
    parser.add_argument("--out", required=True, help="output folder")
    add_durability_args(parser, "episodes", default_every=5)
    add_run_args(parser)
    add_tensorboard_arg(parser)
    return parser


def unit_interval_float(text: str) -> float:
    """A number in [0, 1)."""
    value = non_negative_float(text)
    if value >= 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text}")
    return value


def closed_unit_float(text: str) -> float:
    """A number in [0, 1]."""
    value = non_negative_float(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {text}")
    return value


def teacher_base(text: str) -> float:
    """'ce' -> 0.0, 'label_smoothing=EPS' -> EPS in (0, 1)."""
    if text == "ce":
        return 0.0
    name, _, value = text.partition("=")
    if name != "label_smoothing" or not value:
        raise argparse.ArgumentTypeError(f"expected ce or label_smoothing=EPS, got {text!r}")
    return open_unit_float(value)


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    try:
        spec = TeacherSpec.from_options(args, seed=args.seed)
    except ValueError as err:
        fail(str(err))
    try:  # the config validates itself; checked before any data is loaded
        config = TeacherTrainingConfig(
            model=args.model, sgd=sgd_config(args), batch_size=args.batch_size, rounds=args.rounds,
            steps_per_round=args.steps_per_round, episode_steps=args.episode_steps,
            pretrain_steps=args.pretrain_steps or 0, engine=args.engine, snapshots=args.snapshots,
            teacher_lr=args.teacher_lr, teacher_optimizer=args.teacher_optimizer, dev_objective=args.dev_objective,
            max_grad_norm=args.teacher_max_grad_norm,
            same_student=args.same_student, students=args.students, seed=args.seed,
            max_non_finite=args.max_non_finite)
    except ValueError as err:
        fail(str(err))
    device = resolve_device(args.device)
    init_from_env()
    if world_size() > 1 and args.engine == "unrolled":  # hypergradient would raise on every rank mid-run
        fail("--engine unrolled is single-process; use stored or checkpointed")
    if args.keep_student and (args.reward_dev != "half" or args.students != 1 or world_size() > 1):
        fail("--keep-student needs --reward-dev half (its checkpoint is chosen on the selection half) and --students "
             "1, in a single process")
    out = Path(args.out)
    try:
        require_divisible(args.batch_size)
        resumed = load_progress(out, "teacher", args) if args.resume else None
        whole = splits = load_data(args)
        if args.reward_dev == "half":
            splits = dataclasses.replace(splits, dev=dev_halves(splits.dev, args.seed)[0])
    except (DatasetUnavailable, CheckpointError, ValueError) as err:
        fail(str(err))
    try:  # fresh_student would raise these after the log is written
        check_batch_size(args.batch_size, splits.train)
    except ValueError as err:
        fail(f"--batch-size: {err}")
    try:
        build_model(args.model, splits.num_classes, splits.in_channels, splits.image_size)
    except ValueError as err:  # e.g. images too small for the model
        fail(str(err))
    seed_everything(args.seed)
    state_extras = tuple(dict.fromkeys(args.state_features))  # a group named twice counts once
    features = StudentState(splits.num_classes, 1, extras=state_extras).feature_names
    try:
        teacher = spec.build(splits.num_classes, features).to(device)
    except ValueError as err:  # a transition matrix of another size
        fail(str(err))
    rows: list[dict] = []
    if resumed is not None:  # everything train_teacher will read from it, before the log is rewritten
        try:
            teacher.load_state_dict(resumed["teacher"]["state"])
            rows = resumed["history"]
            check_resume(teacher, splits, config, device, state_extras, resumed["progress"])
        except (KeyError, RuntimeError, ValueError, TypeError) as err:
            fail(unfit_message(out, err))
    kept = None
    if args.keep_student:
        reward, selection, test = (sharded_eval_batches(data, 500, whole.mean, whole.std, device) for data in
                                   (*dev_halves(whole.dev, args.seed), whole.test))
        kept = KeptStudent(out / "student", args, teacher, whole, reward, selection, test, config.rounds - 1,
                           config.pretrain_steps + config.steps_per_round,
                           resumed.get("kept_student") if resumed is not None else None)
    log = CsvLog(out / "teacher_log.csv", rows) if is_main() else None
    board = TensorBoardLog(out, is_main() and not args.no_tensorboard, len(rows) if resumed is not None else None)

    def on_episode(row: dict) -> None:
        rows.append(row)
        if log is not None:
            log(row)
        board.teacher_episode(row, len(rows) - 1)

    def checkpoint(controller_state: dict) -> dict:
        """The teacher's controller state (its "teacher" entry is what l2t-image-train-student reads) and the run."""
        return {"kind": "teacher", **controller_state, "dataset": args.dataset, "model": args.model,
                "state_extras": list(state_extras), "args": vars(args)}

    episodes = config.rounds * (config.steps_per_round // config.episode_steps)

    def save_progress(progress: dict) -> None:
        if args.save_every and len(rows) % args.save_every == 0 and len(rows) < episodes:
            save_finite_on_main({**checkpoint(progress["controller"]), "progress": progress, "history": rows,
                                 "kept_student": kept.state_dict() if kept is not None else None},
                                out / LAST_CHECKPOINT)

    try:
        controller = train_teacher(teacher, splits, config, device, state_extras, on_episode,
                                  progress=not args.no_progress and is_main(),
                                  resume=resumed["progress"] if resumed else None, after_episode=save_progress,
                                  on_student=kept)
        save_finite_on_main(checkpoint(controller.state_dict()), out / "teacher.pt")
    except (FloatingPointError, OSError) as err:
        fail(str(err))
    finally:
        board.close()
    summary = {"teacher": str(out / "teacher.pt"), "episodes": len(rows),
               "first_dev_objective": rows[0]["dev_objective"], "last_dev_objective": rows[-1]["dev_objective"],
               "skipped_non_finite": sum(r["skipped_non_finite"] for r in rows), "processes": world_size()}
    if kept is not None:
        summary["kept_student"] = {"out": str(out / "student"), **kept.summary["selected"]}
    if not is_main():
        return summary
    (out / "summary.json").write_text(json.dumps(summary))
    (out / LAST_CHECKPOINT).unlink(missing_ok=True)
    print(json.dumps(summary))
    return summary


def cli() -> None:
    """The console script: main() returns its summary for callers, which sys.exit would print as an error."""
    main()


if __name__ == "__main__":
    cli()
