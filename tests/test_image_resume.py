"""Durability of the image_cls CLIs: a run killed with SIGKILL and resumed with
--resume ends bit-identical to an uninterrupted run, and a kill during a save
leaves the previous checkpoint intact."""
import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from fairseq_l2t.loss_structures import DenseStructure
from fairseq_l2t.state_features import StudentState
from fairseq_l2t.teacher import Teacher
from fairseq_l2t.teacher_controller import teacher_payload
from image_cls.cli import train_student, train_teacher
from image_cls.run_files import checkpoints
from image_cls.run_files.checkpoints import load_checkpoint, save_atomic
from image_cls.run_files.resume import LAST_CHECKPOINT, remove_stale_temp_files

# equality claims: a resumed run is bit-identical to an uninterrupted one on the same machine
pytestmark = pytest.mark.equality

REPO = Path(__file__).resolve().parents[1]
# one thread per process: the runs are reproducible and can share the cores
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def launch(module: str, argv: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", module, *argv, "--no-progress"], cwd=REPO, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def run_in_process(main, argv: list[str]) -> None:
    """The uninterrupted reference, in this process but single-threaded like the subprocesses."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        main([*argv, "--no-progress"])
    finally:
        torch.set_num_threads(threads)


def finish(process: subprocess.Popen) -> str:
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    return out


def lines(path: Path) -> int:
    return path.read_text().count("\n") if path.is_file() else 0


def kill_once(process: subprocess.Popen, ready, timeout: float = 120.0) -> None:
    """SIGKILL `process` as soon as ready() holds; fail if it ends first."""
    deadline = time.monotonic() + timeout
    while not ready():
        if process.poll() is not None:
            pytest.fail(f"the run ended before it could be killed: {process.communicate()[1][-500:]}")
        assert time.monotonic() < deadline, "the run never reached the kill point"
        time.sleep(0.002)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL


def killed_and_resumed_teacher(tmp_path: Path, argv: list[str], logged: int) -> tuple[Path, Path, dict, int]:
    """A teacher run SIGKILLed once `logged` lines are in its log, then resumed, beside an uninterrupted one:
    (uninterrupted folder, resumed folder, the checkpoint it resumed from, the log's lines at the kill)."""
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    killed = launch("image_cls.cli.train_teacher", argv + ["--out", str(broken)])
    kill_once(killed, lambda: lines(broken / "teacher_log.csv") >= logged)
    saved, logged_at_kill = load_checkpoint(broken / LAST_CHECKPOINT, "teacher"), lines(broken / "teacher_log.csv")
    assert not (broken / "teacher.pt").exists()
    resumed = launch("image_cls.cli.train_teacher", argv + ["--out", str(broken), "--resume"])
    run_in_process(train_teacher.main, argv + ["--out", str(whole)])
    finish(resumed)
    return whole, broken, saved, logged_at_kill


def csv_rows(path: Path) -> list[dict]:
    """The logged rows without their wall times, after checking that the time runs on across the resume."""
    with path.open() as handle:
        rows = list(csv.DictReader(handle))
    seconds = [float(row.pop("seconds")) for row in rows]
    assert seconds == sorted(seconds)
    return rows


def assert_same_tensors(a, b) -> None:
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            assert_same_tensors(a[key], b[key])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_same_tensors(x, y)
    else:
        assert a == b


@pytest.fixture(scope="module")
def teacher_file(tmp_path_factory) -> Path:
    """An untrained teacher with non-zero deltas, so its loss changes with the student's state."""
    state = StudentState(10, 1)
    teacher = Teacher(DenseStructure(10), state.num_features, 2, False, state.feature_names, -9.2)
    with torch.no_grad():
        for p in teacher.delta.values():
            p.normal_(0, 0.05)
    path = tmp_path_factory.mktemp("teacher") / "teacher.pt"
    save_atomic({"kind": "teacher", "teacher": teacher_payload(teacher)}, path)
    return path


def test_student_cli_killed_and_resumed_matches_an_uninterrupted_run(tmp_path, teacher_file):
    argv = ["--model", "mlp", "--loss", "teacher", "--teacher", str(teacher_file), "--online-every", "4",
            "--lookahead", "2", "--steps", "60", "--eval-every", "10", "--save-every", "15", "--seed", "3"]
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    killed = launch("image_cls.cli.train_student", argv + ["--out", str(broken)])
    # killed after the eval row of step 20 and so after the checkpoint of step 15: one row must not repeat
    kill_once(killed, lambda: lines(broken / "log.csv") >= 3)
    saved = load_checkpoint(broken / LAST_CHECKPOINT, "student")
    assert 15 <= saved["step"] < 60 and not (broken / "checkpoint.pt").exists()
    assert lines(broken / "log.csv") - 1 > len(saved["history"])  # rows past the checkpoint were logged
    resumed = launch("image_cls.cli.train_student", argv + ["--out", str(broken), "--resume"])
    run_in_process(train_student.main, argv + ["--out", str(whole)])
    finish(resumed)
    a, b = (torch.load(d / "checkpoint.pt", weights_only=True) for d in (whole, broken))
    for key in ("model_state", "optimizer_state", "student_state", "teacher", "step"):
        assert_same_tensors(a[key], b[key])
    rows = csv_rows(broken / "log.csv")
    assert [r["step"] for r in rows] == [str(s) for s in range(10, 61, 10)]  # no duplicates, none missing
    assert rows == csv_rows(whole / "log.csv")
    assert int(rows[-1]["teacher_updates"]) == 15  # before steps 0, 4, ..., 56
    assert_same_tensors(*(torch.load(d / "loss_trace.pt", weights_only=True) for d in (whole, broken)))
    assert not (broken / LAST_CHECKPOINT).exists()  # removed once the run finished


def test_teacher_cli_killed_mid_round_and_resumed_matches_an_uninterrupted_run(tmp_path):
    argv = ["--model", "mlp", "--rounds", "2", "--steps-per-round", "20", "--episode-steps", "5",
            "--pretrain-steps", "5", "--save-every", "2", "--seed", "1"]
    # killed with 3 episodes logged and the checkpoint of 2 written
    whole, broken, saved, logged = killed_and_resumed_teacher(tmp_path, argv, 4)
    progress = saved["progress"]
    assert progress["round"] == 0 and 2 <= progress["episode"] < 4
    assert logged - 1 > len(saved["history"])
    a, b = (torch.load(d / "teacher.pt", weights_only=True) for d in (whole, broken))
    assert_same_tensors(a["teacher"], b["teacher"])
    assert_same_tensors(a["optimizer"], b["optimizer"])
    rows = csv_rows(broken / "teacher_log.csv")
    assert [(r["round"], r["episode"]) for r in rows] == [(str(r), str(e)) for r in range(2) for e in range(4)]
    assert rows == csv_rows(whole / "teacher_log.csv")


def test_teacher_cli_keeping_its_student_resumes_that_student_exactly(tmp_path):
    """Killed mid-round with --keep-student: the kept student's log, selection and checkpoints are the same."""
    argv = ["--model", "mlp", "--rounds", "1", "--steps-per-round", "30", "--episode-steps", "5", "--save-every", "2",
            "--reward-dev", "half", "--keep-student", "--label-noise", "symmetric:0.4", "--no-tensorboard"]
    whole, broken, saved, _ = killed_and_resumed_teacher(tmp_path, argv, 4)
    assert len(saved["kept_student"]["history"]) >= 2
    for name in ("checkpoint.pt", "checkpoint_selected.pt"):
        a, b = (torch.load(d / "student" / name, weights_only=False) for d in (whole, broken))
        assert a["step"] == b["step"]
        assert_same_tensors(a["model_state"], b["model_state"])
    assert_same_tensors(*(torch.load(d / "student" / "loss_trace.pt", weights_only=True) for d in (whole, broken)))
    assert (whole / "student" / "log.csv").read_text() == (broken / "student" / "log.csv").read_text()
    assert (whole / "student" / "summary.json").read_text() == (broken / "student" / "summary.json").read_text()


def test_an_interrupted_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    save_atomic({"kind": "student", "step": 1, "w": torch.ones(3)}, path)
    real_save = torch.save

    def half_written(obj, handle):
        real_save(obj, handle)
        handle.truncate(10)
        raise KeyboardInterrupt  # what Ctrl-C in the middle of a save looks like

    monkeypatch.setattr(checkpoints.torch, "save", half_written)
    with pytest.raises(KeyboardInterrupt):
        save_atomic({"kind": "student", "step": 2, "w": torch.zeros(3)}, path)
    monkeypatch.undo()
    kept = load_checkpoint(path, "student")
    assert kept["step"] == 1 and torch.equal(kept["w"], torch.ones(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]  # the temp file is gone


SAVER = """
import os, sys, time, torch
from image_cls.run_files.checkpoints import save_atomic
path = sys.argv[1]
save_atomic({"kind": "student", "step": 1, "w": torch.ones(3)}, path)
def stall(fd):
    print("saving", flush=True)
    time.sleep(60)
os.fsync = stall
save_atomic({"kind": "student", "step": 2, "w": torch.zeros(3)}, path)
"""


def test_sigkill_during_a_save_keeps_the_previous_checkpoint(tmp_path):
    path = tmp_path / LAST_CHECKPOINT
    saver = subprocess.Popen([sys.executable, "-c", SAVER, str(path)], cwd=REPO, env=ENV, stdout=subprocess.PIPE,
                             text=True)
    assert saver.stdout.readline().strip() == "saving"  # the new checkpoint is written, not yet renamed
    saver.send_signal(signal.SIGKILL)
    saver.communicate(timeout=60)
    kept = load_checkpoint(path, "student")
    assert kept["step"] == 1 and torch.equal(kept["w"], torch.ones(3))
    stale = [p.name for p in tmp_path.iterdir() if p != path]
    assert len(stale) == 1 and stale[0].startswith(f".{LAST_CHECKPOINT}.") and stale[0].endswith(".tmp")
    remove_stale_temp_files(path)  # what --resume does before continuing
    assert [p.name for p in tmp_path.iterdir()] == [LAST_CHECKPOINT]


def test_teacher_cli_with_two_students_resumes_exactly(tmp_path):
    argv = ["--model", "mlp", "--rounds", "1", "--steps-per-round", "40", "--episode-steps", "5", "--students", "2",
            "--structure", "soft_target", "--teacher-base", "label_smoothing=0.1", "--save-every", "2"]
    whole, broken, saved, _ = killed_and_resumed_teacher(tmp_path, argv, 4)
    assert len(saved["progress"]["students"]) == 2
    a, b = (torch.load(d / "teacher.pt", weights_only=True) for d in (whole, broken))
    assert_same_tensors(a["teacher"], b["teacher"])
    assert csv_rows(broken / "teacher_log.csv") == csv_rows(whole / "teacher_log.csv")
