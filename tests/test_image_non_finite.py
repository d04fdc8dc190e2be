"""NaN/Inf during image_cls training: a non-finite teacher output or
hypergradient is skipped and counted, the student keeps the last finite loss,
too many in a row stop the run, and no checkpoint is ever written poisoned."""
import copy
import itertools
import math

import pytest
import torch

from fairseq_l2t.dev_objectives import smooth_error
from fairseq_l2t.functional_student import SGDConfig
from fairseq_l2t.loss_structures import DenseStructure
from fairseq_l2t.state_features import StudentState
from fairseq_l2t.teacher import Teacher
from fairseq_l2t.teacher_controller import TeacherController, teacher_payload
from image_cls.cli import train_student
from image_cls.data.batches import BatchStream, eval_batches
from image_cls.data.splits import load_splits
from image_cls.run_files.checkpoints import load_checkpoint, save_atomic, save_finite
from image_cls.run_files.resume import LAST_CHECKPOINT
from image_cls.training import student_loop, teacher_episodes
from image_cls.training.models import build_model
from image_cls.training.student_loop import OnlineTeaching
from image_cls.training.student_loop import train_student as train_student_loop
from image_cls.training.student_losses import StudentLoss
from image_cls.training.teacher_episodes import TeacherTrainingConfig, train_teacher

SGD = SGDConfig(0.05, 0.9, 5e-4)


@pytest.fixture(scope="module")
def splits():
    return load_splits("mnist5k", seed=0)


@pytest.fixture(scope="module")
def dev(splits):
    return eval_batches(splits.dev, 500, splits.mean, splits.std)


def make_teacher() -> Teacher:
    state = StudentState(10, 1)
    teacher = Teacher(DenseStructure(10), state.num_features, 2, False, state.feature_names, -9.2)
    with torch.no_grad():
        for p in teacher.delta.values():
            p.normal_(0, 0.05)
    return teacher


def patch_outputs(teacher: Teacher, replace) -> None:
    """teacher(features) returns replace(call number, real output) from now on."""
    real, calls = teacher.forward, itertools.count()
    teacher.forward = lambda features: replace(next(calls), real(features))


def nan_like(phi: dict) -> dict:
    return {k: torch.full_like(v, math.nan) for k, v in phi.items()}


def controller(teacher: Teacher, max_non_finite: int = 10) -> TeacherController:
    return TeacherController(teacher, 1e-3, max_non_finite=max_non_finite)


def train(splits, dev, teacher, steps=8, max_non_finite=10, online=None, seed=3):
    """`teacher` is a Teacher or the TeacherController that holds it."""
    torch.manual_seed(seed)
    model = build_model("mlp", 10, 1, 28)
    stream = BatchStream(splits.train, 32, 0, splits.mean, splits.std, False)
    held = teacher if isinstance(teacher, TeacherController) else controller(teacher, max_non_finite)
    loss = StudentLoss("teacher", controller=held)
    run = train_student_loop(model, stream, steps, SGD, loss, StudentState(10, total_steps=100), dev,
                             eval_every=1000, online=online, progress=False)
    return model, loss, run


def test_non_finite_teacher_outputs_are_replaced_by_the_last_finite_one(splits, dev):
    teacher = make_teacher()
    broken, frozen = copy.deepcopy(teacher), copy.deepcopy(teacher)
    patch_outputs(broken, lambda i, phi: nan_like(phi) if i in (3, 4) else phi)
    kept = {}
    # the reference hands out step 2's loss at steps 3 and 4 on purpose
    patch_outputs(frozen, lambda i, phi: kept.setdefault("phi", phi) if i in (2, 3, 4) else phi)
    model, loss, run = train(splits, dev, broken)
    twin, _, _ = train(splits, dev, frozen)
    clean, _, _ = train(splits, dev, teacher)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), twin.parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(model.parameters(), clean.parameters()))
    assert loss.controller.outputs.total == 2 and loss.controller.outputs.consecutive == 0
    assert run.history[-1]["teacher_non_finite_phi"] == 2


def test_consecutive_non_finite_teacher_outputs_stop_the_run(splits, dev):
    teacher = make_teacher()
    patch_outputs(teacher, lambda i, phi: nan_like(phi) if i >= 2 else phi)
    with pytest.raises(FloatingPointError, match="3 consecutive non-finite teacher outputs"):
        train(splits, dev, teacher, max_non_finite=3)
    # with no finite output yet, the student gets the teacher's base loss
    first, base = make_teacher(), make_teacher()
    patch_outputs(first, lambda i, phi: nan_like(phi))
    patch_outputs(base, lambda i, phi: base.structure.init_params())
    model, _, _ = train(splits, dev, first, max_non_finite=100)
    twin, _, _ = train(splits, dev, base)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), twin.parameters()))


def nan_grads(result):
    result.teacher_grads = tuple(torch.full_like(g, math.nan) for g in result.teacher_grads)
    return result


def patch_hypergradients(monkeypatch, module, name, bad_calls) -> None:
    real, calls = getattr(module, name), itertools.count()

    def patched(*args, **kwargs):
        result = real(*args, **kwargs)
        return nan_grads(result) if next(calls) in bad_calls else result

    monkeypatch.setattr(module, name, patched)


def online_teaching(dev):
    return OnlineTeaching(every=2, lookahead=1, dev_objective=smooth_error, dev_batches=dev)


def test_non_finite_online_hypergradients_are_skipped_then_stop_the_run(splits, dev, monkeypatch):
    patch_hypergradients(monkeypatch, student_loop, "lookahead_hypergradient", {0, 2})
    held = controller(make_teacher(), max_non_finite=2)
    _, _, run = train(splits, dev, held, steps=8, online=online_teaching(dev))  # updates before steps 0, 2, 4, 6
    assert (held.updates, held.hypergradients.total) == (2, 2)  # 0 and 2 are not consecutive: no stop
    assert run.history[-1]["teacher_skipped_non_finite"] == 2 and run.history[-1]["teacher_updates"] == 2

    patch_hypergradients(monkeypatch, student_loop, "lookahead_hypergradient", set(range(100)))
    teacher = make_teacher()
    initial = copy.deepcopy(teacher.state_dict())
    held = controller(teacher, max_non_finite=3)
    with pytest.raises(FloatingPointError, match="3 consecutive non-finite hypergradients"):
        train(splits, dev, held, steps=8, online=online_teaching(dev))
    assert held.updates == 0 and not held.optimizer.state
    assert all(torch.equal(v, initial[k]) for k, v in teacher.state_dict().items())


def teacher_config(limit=10):
    return TeacherTrainingConfig(model="mlp", sgd=SGD, batch_size=32, rounds=1, steps_per_round=15, episode_steps=5,
                                 max_non_finite=limit, seed=0)


def test_teacher_training_skips_a_non_finite_hypergradient(splits, monkeypatch):
    patch_hypergradients(monkeypatch, teacher_episodes, "hypergradient", {1})
    teacher, rows, states = make_teacher(), [], []

    def on_episode(row):
        rows.append(row)
        states.append(copy.deepcopy(teacher.state_dict()))

    train_teacher(teacher, splits, teacher_config(), torch.device("cpu"), on_episode=on_episode, progress=False)
    assert [r["skipped_non_finite"] for r in rows] == [0, 1, 0]
    assert all(torch.equal(states[1][k], states[0][k]) for k in states[0])  # episode 1 left the teacher alone
    assert not all(torch.equal(states[2][k], states[1][k]) for k in states[1])


def test_teacher_training_stops_when_it_cannot_recover(splits, monkeypatch):
    patch_hypergradients(monkeypatch, teacher_episodes, "hypergradient", {0, 1, 2})
    with pytest.raises(FloatingPointError, match="2 consecutive non-finite hypergradients"):
        train_teacher(make_teacher(), splits, teacher_config(limit=2), torch.device("cpu"), progress=False)
    monkeypatch.undo()
    real = teacher_episodes.hypergradient

    def diverged(*args, **kwargs):
        result = real(*args, **kwargs)
        result.final.params[0].fill_(math.inf)
        return result

    monkeypatch.setattr(teacher_episodes, "hypergradient", diverged)
    with pytest.raises(FloatingPointError, match="student's parameters became non-finite in round 0, episode 0"):
        train_teacher(make_teacher(), splits, teacher_config(), torch.device("cpu"), progress=False)


def test_a_poisoned_checkpoint_is_never_written(tmp_path):
    path = tmp_path / "checkpoint.pt"
    save_atomic({"kind": "student", "model_state": {"w": torch.ones(2)}}, path)
    poisoned = {"kind": "student", "model_state": {"w": torch.tensor([1.0, math.nan])},
                "history": [{"train_loss": math.nan}]}
    with pytest.raises(FloatingPointError, match=r"model_state\.w is not finite"):
        save_finite(poisoned, path)
    assert torch.equal(load_checkpoint(path, "student")["model_state"]["w"], torch.ones(2))
    save_finite({**poisoned, "model_state": {"w": torch.zeros(2)}}, path)  # NaN in the logs is no poison
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


def test_cli_stops_on_non_finite_teacher_outputs_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch, capsys):
    save_atomic({"kind": "teacher", "teacher": teacher_payload(make_teacher())}, tmp_path / "teacher.pt")
    real, calls = Teacher.forward, itertools.count()
    # a student step and an eval snapshot each ask once: from about step 11 on, only NaN
    monkeypatch.setattr(Teacher, "forward",
                        lambda self, s: nan_like(real(self, s)) if next(calls) >= 12 else real(self, s))
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as info:
        train_student.main(["--loss", "teacher", "--teacher", str(tmp_path / "teacher.pt"), "--steps", "30",
                            "--eval-every", "10", "--save-every", "5", "--max-non-finite", "2", "--no-progress",
                            "--out", str(out)])
    assert info.value.code != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "2 consecutive non-finite teacher outputs" in err[0] and "--max-non-finite" in err[0]
    kept = load_checkpoint(out / LAST_CHECKPOINT, "student")
    assert kept["step"] == 10 and kept["progress"]["controller"]["non_finite"]["outputs"]["total"] == 0
    assert not (out / "checkpoint.pt").exists() and not (out / "summary.json").exists()


def test_cli_a_diverging_student_stops_without_a_final_checkpoint(tmp_path, capsys):
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as info:
        train_student.main(["--lr", "1e4", "--steps", "20", "--save-every", "1", "--no-progress", "--out", str(out)])
    assert info.value.code != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "the student's loss became nan" in err[0] and "lower --lr" in err[0]
    kept = load_checkpoint(out / LAST_CHECKPOINT, "student")  # the last good one, finite by construction
    assert 1 <= kept["step"] < 20 and all(bool(torch.isfinite(v).all()) for v in kept["model_state"].values())
    assert not (out / "checkpoint.pt").exists()
