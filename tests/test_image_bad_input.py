"""Bad input to the image_cls CLIs: every case stops with one line that names
the problem and the fix, exits non-zero and writes nothing (docs/bad_input.md
lists them)."""
import numpy as np
import pytest
import torch
import torchvision

from fairseq_l2t.loss_structures import DenseStructure
from fairseq_l2t.state_features import StudentState
from fairseq_l2t.teacher import Teacher
from fairseq_l2t.teacher_controller import TeacherController, teacher_payload
from image_cls.cli import evaluate, train_student, train_teacher
from image_cls.data import builtin_datasets as data
from image_cls.run_files.checkpoints import save_atomic
from image_cls.run_files.resume import LAST_CHECKPOINT

MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
STUDENT, TEACHER = train_student.main, train_teacher.main


def cli_error(main, argv, capsys) -> list[str]:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code not in (0, None)
    return capsys.readouterr().err.strip().splitlines()


def one_line_error(main, argv, capsys) -> str:
    """The single stderr line of a failure reported by cli_common.fail."""
    lines = cli_error(main, argv, capsys)
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


@pytest.mark.parametrize("main, argv, expected", [
    (STUDENT, ["--lr", "0"], "argument --lr: must be a positive number, got 0"),
    (STUDENT, ["--lr", "nan"], "argument --lr: must be finite, got nan"),
    (STUDENT, ["--lr", "inf"], "argument --lr: must be finite, got inf"),
    (STUDENT, ["--lr", "fast"], "argument --lr: not a number: 'fast'"),
    (STUDENT, ["--steps", "-1"], "argument --steps: must be a positive integer, got -1"),
    (STUDENT, ["--steps", "0"], "argument --steps: must be a positive integer, got 0"),
    (STUDENT, ["--batch-size", "0"], "argument --batch-size: must be a positive integer, got 0"),
    (STUDENT, ["--eval-every", "0"], "argument --eval-every: must be a positive integer"),
    (STUDENT, ["--momentum", "-0.5"], "argument --momentum: must be >= 0"),
    (STUDENT, ["--weight-decay", "nan"], "argument --weight-decay: must be finite"),
    (STUDENT, ["--label-smoothing", "1.5"], "argument --label-smoothing: must be strictly between 0 and 1"),
    (STUDENT, ["--teacher-lr", "nan"], "argument --teacher-lr: must be finite"),
    (STUDENT, ["--lookahead", "0"], "argument --lookahead: must be a positive integer"),
    (STUDENT, ["--save-every", "-1"], "argument --save-every: must be >= 0"),
    (STUDENT, ["--max-non-finite", "0"], "argument --max-non-finite: must be a positive integer"),
    (STUDENT, ["--model", "foo"], "argument --model: unknown model 'foo'; choose from mlp, lenet"),
    (STUDENT, ["--model", "wrn-DEPTH-WIDTH"], "argument --model: unknown model 'wrn-DEPTH-WIDTH'"),
    (STUDENT, ["--model", "wrn-15-2"], "Wide ResNet depth must be 6n+4"),
    (STUDENT, ["--dataset", "svhn"], "argument --dataset: invalid choice: 'svhn'"),
    (TEACHER, ["--rounds", "0"], "argument --rounds: must be a positive integer"),
    (TEACHER, ["--teacher-lr", "0"], "argument --teacher-lr: must be a positive number"),
    (TEACHER, ["--prob-floor", "-1"], "argument --teacher-prob-floor/--prob-floor: must be >= 0"),
    (TEACHER, ["--snapshots", "0"], "argument --snapshots: must be a positive integer"),
    (TEACHER, ["--model", "foo"], "argument --model: unknown model 'foo'"),
    (TEACHER, ["--save-every", "x"], "argument --save-every: not a number: 'x'"),
    (TEACHER, ["--state-features", "lr"], "argument --state-features: invalid choice: 'lr'"),
    (TEACHER, ["--state-features"], "argument --state-features: expected at least one argument"),
])
def test_bad_options_are_refused_at_parse_time(tmp_path, capsys, main, argv, expected):
    last = cli_error(main, [*argv, "--out", str(tmp_path / "run")], capsys)[-1]
    prog = "l2t-image-train-student" if main is STUDENT else "l2t-image-train-teacher"
    assert last.startswith(f"{prog}: error: ") and expected in last, last
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("main, argv, expected", [
    (STUDENT, ["--momentum", "1"], "momentum must be in [0, 1)"),
    (STUDENT, ["--batch-size", "5000"], "--batch-size: batch size must be between 1 and the split size 3000"),
    (STUDENT, ["--online-every", "5"], "--online-every only makes sense with --loss teacher"),
    (TEACHER, ["--steps-per-round", "12", "--episode-steps", "5"], "must be a multiple of episode_steps"),
    (TEACHER, ["--batch-size", "5000"], "--batch-size: batch size must be between 1 and the split size 3000"),
    (TEACHER, ["--keep-student"], "--keep-student needs --reward-dev half"),
    (TEACHER, ["--keep-student", "--reward-dev", "half", "--students", "2"], "--keep-student needs --reward-dev half"),
])
def test_inconsistent_options_are_one_line_errors(tmp_path, capsys, main, argv, expected):
    line = one_line_error(main, [*argv, "--no-progress", "--out", str(tmp_path / "run")], capsys)
    assert expected in line
    assert not (tmp_path / "run").exists()


def write_mnist_files(root, content: bytes) -> None:
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in MNIST_FILES:
        (raw / name).write_bytes(content)


@pytest.mark.parametrize("main", [STUDENT, TEACHER])
@pytest.mark.parametrize("files, why", [
    (None, "files not found and download is off"),
    (b"", "files are corrupt or truncated"),
    (np.random.default_rng(0).bytes(4096), "files are corrupt or truncated"),
])
def test_missing_empty_or_corrupt_dataset_files(tmp_path, capsys, main, files, why):
    if files is not None:
        write_mnist_files(tmp_path / "data", files)
    line = one_line_error(main, ["--dataset", "mnist", "--data-root", str(tmp_path / "data"), "--out",
                                 str(tmp_path / "run")], capsys)
    assert "dataset mnist is not available" in line and why in line
    assert "fix: run once online with --download, or use --dataset mnist5k" in line
    assert not (tmp_path / "run").exists()


def test_a_dev_split_without_examples_is_refused(tmp_path, capsys, monkeypatch):
    class TinyCifar:
        def __init__(self, root, train, download):
            n = 40 if train else 20
            self.data = np.zeros((n, 32, 32, 3), dtype=np.uint8)
            self.targets, self.classes = [i % 10 for i in range(n)], [str(c) for c in range(10)]

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", TinyCifar)
    monkeypatch.setitem(data._DEV_SIZES, "cifar10", 0)
    for main in (STUDENT, TEACHER):
        line = one_line_error(main, ["--dataset", "cifar10", "--out", str(tmp_path / "run")], capsys)
        assert "has an empty dev split" in line and "fix:" in line
    assert not (tmp_path / "run").exists()


def make_teacher(num_classes: int = 10) -> Teacher:
    state = StudentState(num_classes, 1)
    return Teacher(DenseStructure(num_classes), state.num_features, 2, False, state.feature_names)


@pytest.fixture
def teacher_file(tmp_path):
    path = tmp_path / "teacher.pt"
    save_atomic({"kind": "teacher", "teacher": teacher_payload(make_teacher())}, path)
    return path


@pytest.mark.parametrize("damage, expected", [
    ("truncate", "cannot be read"),
    ("garbage", "cannot be read"),
    ("empty", "cannot be read"),
    ("student", "is not a teacher checkpoint (found 'student')"),
    ("seven_classes", "trained for 7 classes but this dataset has 10"),
])
def test_bad_teacher_checkpoints(tmp_path, capsys, teacher_file, damage, expected):
    if damage == "truncate":
        teacher_file.write_bytes(teacher_file.read_bytes()[:300])
    elif damage == "garbage":
        teacher_file.write_bytes(np.random.default_rng(1).bytes(2000))
    elif damage == "empty":
        teacher_file.write_bytes(b"")
    elif damage == "student":
        save_atomic({"kind": "student"}, teacher_file)
    else:
        save_atomic({"kind": "teacher", "teacher": teacher_payload(make_teacher(7))}, teacher_file)
    line = one_line_error(STUDENT, ["--loss", "teacher", "--teacher", str(teacher_file), "--out",
                                    str(tmp_path / "run")], capsys)
    assert expected in line
    assert not (tmp_path / "run").exists()


def test_evaluating_a_truncated_or_foreign_checkpoint(tmp_path, capsys, teacher_file):
    assert "not a student checkpoint (found 'teacher')" in one_line_error(evaluate.main, [str(teacher_file)], capsys)
    teacher_file.write_bytes(teacher_file.read_bytes()[:100])
    assert "corrupt or truncated" in one_line_error(evaluate.main, [str(teacher_file)], capsys)


def progress_checkpoint(main, argv) -> dict:
    """What a periodic checkpoint of a run with these options records (its kind, options and progress)."""
    args = main.__globals__["build_parser"]().parse_args(argv)
    return {"kind": "student" if main is STUDENT else "teacher", "args": vars(args), "progress": {}}


def snapshot(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir()}


@pytest.mark.parametrize("main", [STUDENT, TEACHER])
def test_bad_resumes(tmp_path, capsys, main):
    out = tmp_path / "run"
    argv = ["--lr", "0.05", "--out", str(out), "--resume"]
    assert f"there is no {out / LAST_CHECKPOINT} to resume from" in one_line_error(main, argv, capsys)
    out.mkdir()
    (out / "summary.json").write_text("{}")
    assert "the run there has finished" in one_line_error(main, argv, capsys)
    save_atomic(progress_checkpoint(main, ["--lr", "0.01", "--out", str(out)]), out / LAST_CHECKPOINT)
    before = snapshot(out)
    line = one_line_error(main, argv, capsys)
    assert "belongs to a different run (--lr was 0.01, now 0.05)" in line and "use another --out" in line
    # same options (--out spelled another way is the same run), nothing inside
    save_atomic(progress_checkpoint(main, ["--lr", "0.05", "--out", f"{tmp_path}/./run"]), out / LAST_CHECKPOINT)
    line = one_line_error(main, argv, capsys)
    assert "does not fit this run (KeyError" in line and "start afresh without --resume" in line
    assert not (out / "log.csv").exists() and not (out / "teacher_log.csv").exists()
    if main is TEACHER:
        bad_teacher_progress(out, argv, capsys)
    (out / LAST_CHECKPOINT).write_bytes(before[LAST_CHECKPOINT][:200])
    assert "corrupt or truncated" in one_line_error(main, argv, capsys)
    before[LAST_CHECKPOINT] = before[LAST_CHECKPOINT][:200]
    assert snapshot(out) == before  # no log, no checkpoint written or removed


def bad_teacher_progress(out, argv, capsys) -> None:
    """A teacher that fits with progress that does not: refused before train_teacher reads it, so the log of the
    run that wrote the checkpoint is not rewritten."""
    teacher = make_teacher()
    controller = TeacherController(teacher, 1e-3).state_dict()
    good = {"controller": controller, "round": 0, "episode": 0, "seconds": 0.0}
    broken = [({k: v for k, v in good.items() if k != "controller"}, "KeyError: 'controller'"),
              ({**good, "controller": {**controller, "optimizer": torch.optim.Adam([torch.zeros(1)]).state_dict()}},
               "ValueError: "),
              ({**good, "controller": {**controller, "non_finite": None}}, "TypeError: "),
              ({**good, "controller": {"optimizer": controller["optimizer"], "skipped": {"total": 0, "consecutive": 0}}},
               "ValueError: the teacher's state was written before fairseq-l2t's teacher checkpoint schema 2"),
              ({**good, "episode": 1}, "KeyError: 'students'")]  # mid-round without the students
    (out / "teacher_log.csv").write_text("round,episode\n0,0\n")
    for progress, error in broken:
        save_atomic({**progress_checkpoint(TEACHER, argv[:-1]), "teacher": teacher_payload(teacher), "history": [],
                     "progress": progress}, out / LAST_CHECKPOINT)
        before = snapshot(out)
        line = one_line_error(TEACHER, argv, capsys)
        assert f"does not fit this run ({error}" in line and "start afresh without --resume" in line, line
        assert snapshot(out) == before
    (out / "teacher_log.csv").unlink()


def test_cuda_without_a_gpu(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for main in (STUDENT, TEACHER):
        line = one_line_error(main, ["--device", "cuda", "--out", str(tmp_path / "run")], capsys)
        assert "no GPU is visible; use --device cpu" in line
    assert not (tmp_path / "run").exists()
