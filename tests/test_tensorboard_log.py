"""TensorBoard event files: OUT/tensorboard/ of the image_cls CLIs (scalars, the teacher's W, resume without
duplicate points) and the teacher's metrics in fairseq-train --tensorboard-logdir."""
import csv
import io
import math
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import IMAGES, SCALARS, EventAccumulator

from image_cls.cli import train_student, train_teacher
from image_cls.run_files.tensorboard_log import TENSORBOARD_DIR, TensorBoardLog, diverging_image

COMMON = ["--model", "mlp", "--no-progress", "--seed", "1"]


def board(folder: Path) -> EventAccumulator:
    """Every point and image in `folder`, as TensorBoard shows them (purged points left out)."""
    return EventAccumulator(str(folder), size_guidance={SCALARS: 0, IMAGES: 0}).Reload()


def steps(events: EventAccumulator, tag: str) -> list[int]:
    return [e.step for e in events.Scalars(tag)]


def csv_column(path: Path, name: str) -> list[float]:
    with path.open() as handle:
        return [float(row[name]) for row in csv.DictReader(handle)]


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tensorboard") / "teacher"
    train_teacher.main(COMMON + ["--rounds", "1", "--steps-per-round", "20", "--episode-steps", "10",
                                 "--out", str(out)])
    return out


def test_teacher_run_logs_one_point_per_episode(teacher_run):
    events = board(teacher_run / TENSORBOARD_DIR)
    assert steps(events, "teacher/dev_objective") == [0, 1]
    logged = [e.value for e in events.Scalars("teacher/dev_objective")]
    assert logged == pytest.approx(csv_column(teacher_run / "teacher_log.csv", "dev_objective"), rel=1e-6)
    assert {"teacher/hypergradient_norm", "teacher/dev_accuracy", "teacher/round"} <= set(events.Tags()["scalars"])


def test_taught_student_logs_eval_rows_gates_and_the_loss_matrix(tmp_path, teacher_run):
    out = tmp_path / "student"
    train_student.main(COMMON + ["--loss", "teacher", "--teacher", str(teacher_run / "teacher.pt"),
                                 "--steps", "30", "--eval-every", "10", "--test-curve", "--out", str(out)])
    events = board(out / TENSORBOARD_DIR)
    tags = set(events.Tags()["scalars"])
    for tag in ("student/dev_accuracy", "student/test_accuracy", "student/train_loss", "teacher/gate0",
                "teacher/gate1", "teacher/W_minus_base_max_abs"):
        assert steps(events, tag) == [10, 20, 30], tag
    assert "student/step" not in tags
    logged = [e.value for e in events.Scalars("student/dev_accuracy")]
    assert logged == pytest.approx(csv_column(out / "log.csv", "dev_accuracy"))
    images = events.Images("teacher/W_minus_base")
    assert [i.step for i in images] == [10, 20, 30]
    # the last image is exactly W - W_base of the run's loss trace, 20 x 20 pixels per entry
    last = torch.load(out / "loss_trace.pt", weights_only=True)["snapshots"][-1]
    delta = (last["W"] - last["W_base"]).double()
    expected = diverging_image(delta, float(delta.abs().max()))
    drawn = np.asarray(Image.open(io.BytesIO(images[-1].encoded_image_string)).convert("RGB"))
    assert expected.shape == (200, 200, 3) and np.array_equal(drawn, expected)


class Killed(Exception):
    """Stands for a SIGKILL between an eval row and the next checkpoint."""


def test_resumed_run_appends_without_repeating_the_points_after_its_checkpoint(tmp_path, monkeypatch):
    argv = COMMON + ["--steps", "20", "--eval-every", "5", "--save-every", "10", "--out", str(tmp_path / "run")]
    logged = TensorBoardLog.student_eval

    def log_then_die_at_15(self, row, snapshots=()):
        logged(self, row, snapshots)
        if row["step"] == 15:
            raise Killed

    with monkeypatch.context() as patch:
        patch.setattr(TensorBoardLog, "student_eval", log_then_die_at_15)
        with pytest.raises(Killed):
            train_student.main(argv)
    folder = tmp_path / "run" / TENSORBOARD_DIR
    assert steps(board(folder), "student/dev_accuracy") == [5, 10, 15]  # 15 lies after the checkpoint of step 10
    # TensorBoard reads event files in name order and names hold whole seconds (then a counter, which may go
    # from .9 to .10): a resume in a later second sorts after the killed run, as a real one always does
    time.sleep(1.01 - time.time() % 1)
    train_student.main(argv + ["--resume"])
    assert len(list(folder.iterdir())) == 2  # appended beside the killed run's file
    assert steps(board(folder), "student/dev_accuracy") == [5, 10, 15, 20]  # the killed run's 15 is purged


def test_a_fresh_run_replaces_old_event_files_and_no_tensorboard_writes_none(tmp_path):
    argv = COMMON + ["--steps", "4", "--eval-every", "2"]
    for _ in range(2):
        train_student.main(argv + ["--out", str(tmp_path / "run")])
    folder = tmp_path / "run" / TENSORBOARD_DIR
    assert len(list(folder.iterdir())) == 1 and steps(board(folder), "student/dev_accuracy") == [2, 4]
    train_student.main(argv + ["--out", str(tmp_path / "quiet"), "--no-tensorboard"])
    assert (tmp_path / "quiet" / "log.csv").is_file() and not (tmp_path / "quiet" / TENSORBOARD_DIR).exists()


def test_non_finite_values_are_left_out(tmp_path):
    log = TensorBoardLog(tmp_path)
    snapshot = {"step": 3, "gates": torch.tensor([0.5, math.nan]), "W": torch.full((4, 4), math.inf),
                "W_base": torch.eye(4)}
    log.student_eval({"step": 3, "train_loss": math.nan, "dev_loss": math.inf, "dev_accuracy": 0.5,
                      "note": "text"}, [snapshot])
    log.close()
    events = board(tmp_path / TENSORBOARD_DIR)
    assert set(events.Tags()["scalars"]) == {"student/dev_accuracy", "teacher/gate0"}
    assert events.Tags()["images"] == []


def test_fairseq_tensorboard_logdir_shows_the_teachers_metrics(tmp_path):
    plugin = pytest.importorskip("test_fairseq_plugin")  # its tiny Bible data and fairseq-train command
    data = plugin.binarize(tmp_path / "bin", 400)
    plugin.train(data, tmp_path / "ckpt", "--criterion", "l2t_dynamic", "--max-update", "2",
                 "--teacher-update-interval", "1", "--lookahead-steps", "1", "--tensorboard-logdir",
                 str(tmp_path / "tb"))
    events = board(tmp_path / "tb" / "train_inner")
    assert steps(events, "teacher_reward") == [1, 2]
    assert {"teacher_updates", "teacher_gate0"} <= set(events.Tags()["scalars"])
