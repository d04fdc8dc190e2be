"""TensorBoard event files beside a run's CSV logs, in OUT/tensorboard/.

The CSV logs stay the record that scripts and plots read; the event files are
for watching runs live and overlaying them (`tensorboard --logdir runs`).
Every row is flushed when logged, so a killed run loses no point before its
last checkpoint.  A resumed run appends to the same folder with a purge step:
TensorBoard then hides the points that the killed run logged after that
checkpoint, and no step appears twice.  A fresh run deletes the event files of
an earlier run in the folder, as CsvLog starts its file afresh.
"""
from __future__ import annotations

import argparse
import math
from numbers import Real
from pathlib import Path
from typing import Mapping, Sequence

import matplotlib
import numpy as np
from torch import Tensor
from torch.utils.tensorboard import SummaryWriter

TENSORBOARD_DIR = "tensorboard"
IMAGE_SIDE = 200  # pixels: a small W is enlarged (each entry a square block) to about this side


def add_tensorboard_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-tensorboard", action="store_true",
                        help=f"do not write TensorBoard event files to OUT/{TENSORBOARD_DIR}/ (by default they are "
                             f"written beside the CSV log; view them with: tensorboard --logdir OUT)")


class TensorBoardLog:
    """The scalars (and the teacher's loss matrices) of one run; does nothing unless `enabled` (the main process,
    without --no-tensorboard).

    `resume_step`: for a resumed run, the first global step it can log; points from that step on that an
    earlier, killed run logged are hidden.  None: a fresh run.
    """

    def __init__(self, out: str | Path, enabled: bool = True, resume_step: int | None = None):
        self._writer: SummaryWriter | None = None
        if not enabled:
            return
        folder = Path(out) / TENSORBOARD_DIR
        if resume_step is None:
            for stale in folder.glob("events.out.tfevents.*"):
                stale.unlink()
        self._writer = SummaryWriter(str(folder), purge_step=resume_step)

    def student_eval(self, row: Mapping, snapshots: Sequence[dict] = ()) -> None:
        """An evaluation row of train_student as student/FIELD at global step row["step"], and the teacher's
        loss snapshot if the run took one at that step (the last of `snapshots`)."""
        if self._writer is None:
            return
        step = row["step"]
        self._scalars("student", {k: v for k, v in row.items() if k != "step"}, step)
        if snapshots and snapshots[-1]["step"] == step:
            self._loss_snapshot(snapshots[-1])
        self._writer.flush()

    def teacher_episode(self, row: Mapping, index: int) -> None:
        """An episode row of train_teacher as teacher/FIELD at global step `index` (episodes so far, from 0)."""
        if self._writer is None:
            return
        self._scalars("teacher", row, index)
        self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def _scalars(self, prefix: str, values: Mapping, step: int) -> None:
        """Every finite number in `values`; NaN/Inf (e.g. a train loss before the first batch) and non-numbers
        are left out rather than drawn as gaps or refused."""
        for name, value in values.items():
            if isinstance(value, Real) and math.isfinite(value):
                self._writer.add_scalar(f"{prefix}/{name}", value, step)

    def _loss_snapshot(self, snapshot: dict) -> None:
        """The teacher's gates as teacher/gateI, and W - W_base (W only exists for at most 200 classes) as the
        image teacher/W_minus_base with its colour scale teacher/W_minus_base_max_abs."""
        step = snapshot["step"]
        self._scalars("teacher", {f"gate{i}": g for i, g in enumerate(snapshot["gates"].tolist())}, step)
        if snapshot["W"] is None:
            return
        delta = (snapshot["W"] - snapshot["W_base"]).double()
        if not bool(delta.isfinite().all()):
            return
        limit = float(delta.abs().max())
        self._writer.add_scalar("teacher/W_minus_base_max_abs", limit, step)
        self._writer.add_image("teacher/W_minus_base", diverging_image(delta, limit), step, dataformats="HWC")


def diverging_image(delta: Tensor, limit: float) -> np.ndarray:
    """`delta` (rows: class i, columns: gold class y, as in plots.plot_loss_matrices) as an RGB uint8 image in
    matplotlib's RdBu_r over [-limit, limit]: white is the base loss, red above it, blue below.  The range is
    each image's own (its size is logged beside it), so that small changes early in training stay visible."""
    unit = delta.numpy() / (2 * limit) + 0.5 if limit > 0 else np.full(tuple(delta.shape), 0.5)
    rgb = matplotlib.colormaps["RdBu_r"](unit, bytes=True)[..., :3]
    block = max(1, IMAGE_SIDE // max(delta.shape))
    return rgb.repeat(block, axis=0).repeat(block, axis=1)
