"""Train a student image classifier with cross-entropy, label smoothing, or a
saved L2T-DLF teacher (optionally still learning online), for any number of
steps.  Writes OUT/log.csv, OUT/checkpoint.pt (student + teacher) and, when
taught, OUT/loss_trace.pt (the loss the teacher handed out at each eval)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from fairseq_l2t.dev_objectives import DEV_OBJECTIVES, get_dev_objective
from fairseq_l2t.state_features import StudentState

from .checkpoints import CheckpointError, load_checkpoint, save_atomic, teacher_from_payload, teacher_payload
from .cli_common import (CsvLog, add_data_args, add_run_args, add_student_args, fail, positive_float, positive_int,
                         resolve_device, seed_everything, sgd_config)
from .data import BatchStream, DatasetUnavailable, eval_batches, load_splits
from .models import build_model
from .student_losses import LOSS_NAMES, StudentLoss
from .student_training import OnlineTeaching, train_student


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="l2t-image-train-student", description=__doc__,
        epilog="example: l2t-image-train-student --loss teacher --teacher runs/teacher/teacher.pt --steps 1500 "
               "--out runs/student-l2t")
    add_data_args(parser)
    add_student_args(parser)
    group = parser.add_argument_group("loss")
    group.add_argument("--loss", choices=LOSS_NAMES, default="ce",
                       help="ce: cross-entropy; label_smoothing; teacher: the loss a saved teacher hands out")
    group.add_argument("--label-smoothing", type=positive_float, default=0.1, help="epsilon for label_smoothing")
    group.add_argument("--teacher", help="teacher checkpoint (teacher.pt from l2t-image-train-teacher)")
    group.add_argument("--online-every", type=positive_int, default=None,
                       help="keep training the teacher: one lookahead hypergradient update every N student steps")
    group.add_argument("--lookahead", type=positive_int, default=5, help="lookahead steps k for --online-every")
    group.add_argument("--teacher-lr", type=positive_float, default=1e-3, help="Adam lr for online teacher updates")
    group.add_argument("--dev-objective", choices=sorted(DEV_OBJECTIVES), default="smooth_error",
                       help="dev objective for online teacher updates (default: %(default)s)")
    group = parser.add_argument_group("schedule")
    group.add_argument("--steps", type=positive_int, default=1500, help="student SGD steps (default: %(default)s)")
    group.add_argument("--eval-every", type=positive_int, default=50,
                       help="dev (and test) evaluation period; the dev accuracy feeds the teacher's state "
                            "(default: %(default)s)")
    group.add_argument("--out", required=True, help="output folder")
    add_run_args(parser)
    return parser


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    if args.loss == "teacher" and not args.teacher:
        fail("--loss teacher needs --teacher PATH (a teacher.pt from l2t-image-train-teacher)")
    if args.online_every and args.loss != "teacher":
        fail("--online-every only makes sense with --loss teacher")
    device = resolve_device(args.device)
    sgd = sgd_config(args)
    try:
        splits = load_splits(args.dataset, args.data_root, args.seed, args.download)
        teacher_ckpt = load_checkpoint(args.teacher, "teacher") if args.loss == "teacher" else None
    except (DatasetUnavailable, CheckpointError, ValueError) as err:
        fail(str(err))
    per_class = bool(teacher_ckpt and teacher_ckpt.get("per_class_features"))
    state = StudentState(splits.num_classes, total_steps=args.steps, per_class=per_class)
    teacher = None
    if teacher_ckpt is not None:
        try:
            teacher = teacher_from_payload(teacher_ckpt["teacher"], splits.num_classes, state.num_features).to(device)
        except CheckpointError as err:
            fail(str(err))
    seed_everything(args.seed)
    model = build_model(args.model, splits.num_classes, splits.in_channels, splits.image_size).to(device)
    stream = BatchStream(splits.train, args.batch_size, args.seed, splits.mean, splits.std, splits.augment, device)
    dev = eval_batches(splits.dev, 500, splits.mean, splits.std, device)
    test = eval_batches(splits.test, 500, splits.mean, splits.std, device)
    online = None
    if args.online_every:
        online = OnlineTeaching(torch.optim.Adam(teacher.parameters(), lr=args.teacher_lr), args.online_every,
                                args.lookahead, get_dev_objective(args.dev_objective), dev)
    out = Path(args.out)
    log = CsvLog(out / "log.csv")
    loss = StudentLoss(args.loss, args.label_smoothing, teacher)
    optimizer = torch.optim.SGD(model.parameters(), lr=sgd.lr, momentum=sgd.momentum, weight_decay=sgd.weight_decay)
    try:
        run = train_student(model, stream, args.steps, sgd, loss, state, dev, args.eval_every, test_batches=test,
                            online=online, on_eval=log, progress=not args.no_progress, optimizer=optimizer)
    except FloatingPointError as err:
        fail(str(err))
    checkpoint = {
        "kind": "student", "model": args.model, "dataset": args.dataset, "seed": args.seed,
        "num_classes": splits.num_classes, "step": args.steps, "args": vars(args),
        "model_state": model.state_dict(), "optimizer_state": optimizer.state_dict(),
        "student_state": state.state_dict(), "per_class_features": per_class,
        "teacher": teacher_payload(teacher) if teacher is not None else None,
    }
    save_atomic(checkpoint, out / "checkpoint.pt")
    if run.loss_snapshots:
        save_atomic({"kind": "loss_trace", "snapshots": run.loss_snapshots}, out / "loss_trace.pt")
    final = run.history[-1]
    summary = {"loss": args.loss, "model": args.model, "dataset": args.dataset, "seed": args.seed,
               "steps": args.steps, "dev_error": 1 - final["dev_accuracy"], "test_error": 1 - final["test_accuracy"]}
    (out / "summary.json").write_text(json.dumps(summary))
    print(json.dumps(summary), file=sys.stdout)
    return summary


if __name__ == "__main__":
    main()
