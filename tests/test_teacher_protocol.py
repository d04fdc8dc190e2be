"""The pieces of the fair comparison: Fashion-MNIST from IDX files, dev halves, online label smoothing,
the well-posed teacher through the CLIs, and the comparison with its selection and paired statistics."""
import csv
import gzip
import json
import math
import struct

import pytest
import torch
import torch.nn.functional as F

from image_cls.cli import train_student, train_teacher
from image_cls.data import builtin_datasets as data
from image_cls.data.builtin_datasets import read_idx
from image_cls.data.image_sets import DatasetUnavailable, ImageSet
from image_cls.data.splits import dev_halves, load_splits
from image_cls.experiments import comparison, results_table
from image_cls.experiments.noisy_comparison import selection_correct
from image_cls.run_files.corrected_trace import read_corrected_trace
from image_cls.experiments.comparison import (
    ComparisonConfig,
    format_table,
    paired_differences,
    run_comparison,
    summarise,
)
from image_cls.training.online_label_smoothing import OnlineLabelSmoothing


def write_idx(path, array: torch.Tensor) -> None:
    header = b"\x00\x00\x08" + bytes([array.dim()]) + struct.pack(f">{array.dim()}I", *array.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.numpy().tobytes())


def fake_fashion(folder, train=60, test=20):
    folder.mkdir(parents=True, exist_ok=True)
    images = torch.randint(0, 256, (train + test, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    labels = (torch.arange(train + test) % 10).to(torch.uint8)
    for name, values in zip(data._FASHION_FILES, (images[:train], labels[:train], images[train:], labels[train:])):
        write_idx(folder / name, values)
    return images, labels


def test_fashion_mnist_reads_the_debian_idx_files_and_carves_a_seeded_dev_split(tmp_path, monkeypatch):
    images, labels = fake_fashion(tmp_path)
    monkeypatch.setattr(data, "FASHION_MNIST_DEBIAN", tmp_path)
    monkeypatch.setitem(data._DEV_SIZES, "fashion_mnist", 20)
    splits = load_splits("fashion_mnist", seed=3)
    assert (len(splits.train), len(splits.dev), len(splits.test)) == (40, 20, 20)
    assert splits.num_classes == 10 and splits.in_channels == 1 and splits.image_size == 28
    torch.testing.assert_close(splits.test.images[:, 0], images[60:])
    train_and_dev = torch.cat([splits.train.images, splits.dev.images])
    assert sorted(train_and_dev.reshape(60, -1).sum(1).tolist()) == sorted(images[:60].reshape(60, -1).sum(1).tolist())
    assert not splits.augment
    again = load_splits("fashion_mnist", seed=3)
    assert torch.equal(again.dev.labels, splits.dev.labels)


def test_a_corrupt_idx_file_is_one_line_with_the_fix(tmp_path, monkeypatch):
    fake_fashion(tmp_path)
    with gzip.open(tmp_path / data._FASHION_FILES[2], "wb") as handle:
        handle.write(b"\x00\x00\x08\x03" + struct.pack(">3I", 20, 28, 28) + b"\x00" * 100)  # truncated body
    monkeypatch.setattr(data, "FASHION_MNIST_DEBIAN", tmp_path)
    with pytest.raises(DatasetUnavailable, match="cannot be read .*reinstall") as info:
        load_splits("fashion_mnist")
    assert "\n" not in str(info.value)
    (tmp_path / "junk.gz").write_bytes(gzip.compress(b"not idx"))
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(tmp_path / "junk.gz")


@pytest.mark.skipif(not data.fashion_mnist_installed(),
                    reason="needs apt-get install -y dataset-fashion-mnist (scripts/setup_env.sh installs it as root)")
def test_the_real_fashion_mnist_has_the_papers_split():
    splits = load_splits("fashion_mnist", seed=0)
    assert (len(splits.train), len(splits.dev), len(splits.test)) == (50_000, 10_000, 10_000)
    assert torch.bincount(splits.test.labels).tolist() == [1000] * 10


def test_dev_halves_are_disjoint_stratified_and_cover_dev():
    labels = torch.arange(103) % 10
    dev = ImageSet(torch.arange(103, dtype=torch.uint8).view(103, 1, 1, 1).expand(103, 1, 2, 2).contiguous(), labels)
    reward, selection = dev_halves(dev, seed=0)
    ids = lambda part: set(part.images[:, 0, 0, 0].tolist())  # noqa: E731
    assert ids(reward).isdisjoint(ids(selection)) and ids(reward) | ids(selection) == set(range(103))
    assert (torch.bincount(reward.labels) - torch.bincount(selection.labels)).abs().max() <= 1
    assert ids(dev_halves(dev, seed=0)[0]) == ids(reward) and ids(dev_halves(dev, seed=1)[0]) != ids(reward)


def test_online_label_smoothing_uses_last_epochs_correct_predictions():
    ols = OnlineLabelSmoothing(num_classes=3, batches_per_epoch=2)
    lprobs = torch.log(torch.tensor([[0.7, 0.2, 0.1], [0.5, 0.3, 0.2], [0.2, 0.6, 0.2], [0.6, 0.3, 0.1]]))
    target = torch.tensor([0, 0, 1, 1])  # the last one is wrong and must not count
    first = ols(lprobs, target, step=0)
    ls = torch.tensor([[0.9, 0.05, 0.05], [0.05, 0.9, 0.05], [0.05, 0.05, 0.9]])  # epoch 0: LS 0.1, off-diagonal / (C-1)
    expected = 0.5 * F.nll_loss(lprobs, target) - 0.5 * (ls[target] * lprobs).sum(-1).mean()
    torch.testing.assert_close(first.float(), expected)
    ols(lprobs, target, step=1)
    ols(lprobs[:1], target[:1], step=2)  # epoch 1 starts: the targets are swapped first
    torch.testing.assert_close(ols.targets[:, 0].float(), torch.tensor([0.6, 0.25, 0.15]))
    torch.testing.assert_close(ols.targets[:, 1].float(), torch.tensor([0.2, 0.6, 0.2]))
    torch.testing.assert_close(ols.targets[:, 2], ls[2].double())  # no correct example of class 2: kept
    twin = OnlineLabelSmoothing(3, 2)
    twin.load_state_dict(ols.state_dict())
    torch.testing.assert_close(twin(lprobs, target, 3), ols(lprobs, target, 3))


@pytest.mark.equality  # keeping the student only reads it: the teacher is bit-identical on the same machine
def test_keep_student_writes_the_teachers_own_student_as_a_run_chosen_on_the_selection_half(tmp_path):
    common = ["--model", "mlp", "--no-progress", "--no-tensorboard", "--rounds", "2", "--steps-per-round", "20",
              "--episode-steps", "5", "--reward-dev", "half", "--label-noise", "asymmetric:0.4",
              "--teacher-structure", "corrected"]
    plain = train_teacher.main(common + ["--out", str(tmp_path / "plain")])
    summary = train_teacher.main(common + ["--keep-student", "--out", str(tmp_path / "kept")])
    a, b = (torch.load(tmp_path / d / "teacher.pt", weights_only=True)["teacher"]["state"] for d in ("plain", "kept"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert "kept_student" not in plain and summary["kept_student"]["out"] == str(tmp_path / "kept" / "student")
    student = tmp_path / "kept" / "student"
    with (student / "log.csv").open() as handle:  # only the last round's student, at every episode end
        rows = [{k: float(v) for k, v in row.items()} for row in csv.DictReader(handle)]
    assert [r["step"] for r in rows] == [5, 10, 15, 20]
    run = json.loads((student / "summary.json").read_text())
    best = min(rows, key=lambda r: r["selection_dev_error"])
    assert run["selected"]["step"] == best["step"] and run["selected"]["selection_dev_error"] == best[
        "selection_dev_error"] and run["selection_dev_error"] == rows[-1]["selection_dev_error"]
    assert run["label_noise"]["noise"] == "asymmetric:0.4" and run["dev_images"] == 1000
    # the checkpoint is the one selected: it gets exactly the logged share of the selection half right
    assert 1 - selection_correct(student).double().mean().item() == pytest.approx(best["selection_dev_error"],
                                                                                   abs=1e-12)
    saved = torch.load(student / "checkpoint.pt", weights_only=False)
    assert saved["kind"] == "student" and saved["step"] == 20
    assert all(torch.equal(saved["teacher"]["state"][k], b[k]) for k in b)  # the finished teacher; its loss traced:
    steps, structure, phis = read_corrected_trace(student)
    assert steps == [5, 10, 15, 20] and structure.kind == "corrected" and len(phis) == 4
    evaluated = train_student.main(["--model", "mlp", "--no-progress", "--no-tensorboard", "--steps", "1",
                                    "--out", str(tmp_path / "unused")])  # the kept run's summary has its keys
    assert set(evaluated) - {"loss"} <= set(run)


def test_well_posed_teacher_clis_and_their_bad_input(tmp_path, capsys):
    common = ["--model", "mlp", "--no-progress", "--seed", "1"]
    teacher_dir = tmp_path / "teacher"
    train_teacher.main(common + ["--rounds", "1", "--steps-per-round", "20", "--episode-steps", "10",
                                 "--structure", "soft_target", "--teacher-base", "label_smoothing=0.2",
                                 "--teacher-form", "attention", "--reward-dev", "half", "--out", str(teacher_dir)])
    saved = torch.load(teacher_dir / "teacher.pt", weights_only=True)["teacher"]["config"]
    assert saved["structure"] == {"kind": "soft_target", "num_classes": 10, "smoothing": 0.2, "fixed_scale": False}
    assert saved["form"] == "attention" and saved["log_prob_floor"] is None
    summary = train_student.main(common + ["--loss", "teacher", "--teacher", str(teacher_dir / "teacher.pt"),
                                           "--steps", "20", "--eval-every", "10", "--out", str(tmp_path / "taught")])
    assert 0 <= summary["reward_dev_error"] <= 1 and 0 <= summary["selection_dev_error"] <= 1
    assert summary["dev_error"] == pytest.approx((summary["reward_dev_error"] + summary["selection_dev_error"]) / 2)
    trace = torch.load(tmp_path / "taught" / "loss_trace.pt", weights_only=True)["snapshots"]
    assert trace[0]["W_base"].diagonal()[0].item() == pytest.approx(0.8 + 0.2 / 10)
    # the old image names (--teacher-base, --structure, --squash, --fixed-loss-scale) are aliases of the shared
    # --teacher-* names, and the errors name the shared ones
    for argv, message in ((["--teacher-base", "label_smoothing=0.1"], "--teacher-smoothing 0.1 needs a well-posed "
                                                                      "--teacher-structure"),
                          (["--teacher-smoothing", "0.1"], "--teacher-smoothing 0.1 needs a well-posed"),
                          (["--structure", "smoothing", "--squash"], "bounded below by construction; drop "
                                                                     "--teacher-squash"),
                          (["--fixed-loss-scale"], "--teacher-fixed-scale needs a well-posed --teacher-structure"),
                          (["--teacher-robustness", "0.5", "--teacher-structure", "smoothing"],
                           "--teacher-robustness needs --teacher-structure corrected"),
                          (["--teacher-smoothing", "1"], "must be in [0, 1), got 1"),
                          (["--teacher-base", "label_smoothing=1.5"], "strictly between 0 and 1"),
                          (["--teacher-base", "focal"], "expected ce or label_smoothing=EPS")):
        with pytest.raises(SystemExit):
            train_teacher.main(common + argv + ["--out", str(tmp_path / "bad")])
        assert message in capsys.readouterr().err.strip().splitlines()[-1]
    assert not (tmp_path / "bad").exists()


def test_comparison_tunes_label_smoothing_on_dev_and_keeps_the_base_unless_the_teacher_wins(tmp_path):
    config = ComparisonConfig(seeds=(0,), steps=20, eval_every=10, ls_grid=(0.1, 0.3), teacher_rounds=1,
                              episode_steps=10, progress=False)
    lines = []
    rows = run_comparison(config, tmp_path, report=lines.append)
    assert [r["method"] for r in rows] == list(comparison.METHODS)
    by = {r["method"]: r for r in rows}
    grid = {eps: json.loads((tmp_path / "mlp" / "seed0" / f"label_smoothing_{eps:g}" / "summary.json").read_text())
            for eps in (0.1, 0.3)}
    tuned = min(grid, key=lambda eps: (grid[eps]["dev_error"], eps))
    assert by["label_smoothing_tuned"]["epsilon"] == tuned and f"chosen on dev: {tuned}" in lines[0]
    teacher = torch.load(tmp_path / "mlp" / "seed0" / "teacher" / "teacher.pt", weights_only=True)
    assert teacher["teacher"]["config"]["structure"]["smoothing"] == tuned
    l2t = by["l2t_dlf"]
    assert l2t["kept_base"] == (not l2t["teacher_selection_dev_error"] < by["label_smoothing_tuned"]["selection_dev_error"])
    expected_test = by["label_smoothing_tuned"]["test_error"] if l2t["kept_base"] else l2t["teacher_test_error"]
    assert l2t["test_error"] == expected_test
    again = run_comparison(ComparisonConfig(**{**config.__dict__, "reuse": True}), tmp_path, report=lines.append)
    assert again == rows  # every finished run is read back, nothing retrained
    table = format_table(summarise(rows), paired_differences(rows))
    assert "label_smoothing_tuned (eps" in table and "| mlp | online_label_smoothing |" in table
    taught_row = next(line for line in table.splitlines() if "taught students (no guard)" in line)
    assert f"| {100 * l2t['teacher_test_error']:.2f} ± 0.00 |" in taught_row


def test_a_results_table_runs_a_named_teacher_variant_beside_the_baselines(tmp_path):
    """--teacher-variant whole-horizon-calibrated: one episode per round spans the whole student training."""
    results_table.main(["--models", "mlp", "--seeds", "1", "--steps", "mlp=10", "--teacher-variant",
                        "whole-horizon-calibrated", "--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "table")],
                       "mnist5k", {"steps": ["mlp=10"], "lr": ["mlp=0.05"], "teacher_rounds": 1, "teacher_lr": 1e-2},
                       "test")
    seed = tmp_path / "runs" / "mlp" / "seed0"
    log = (seed / "teacher-whole-horizon-calibrated" / "teacher_log.csv").read_text().splitlines()[1:]
    assert [row.split(",")[:3] for row in log] == [[str(k), "0", "10"] for k in range(8)]
    assert (seed / "l2t_dlf-whole-horizon-calibrated" / "summary.json").is_file()
    assert not (seed / "teacher").exists()
    saved = json.loads((tmp_path / "table.json").read_text())
    assert "teacher variant whole-horizon-calibrated" in saved["settings"]
    assert [r["method"] for r in saved["rows"]] == list(comparison.METHODS)


def test_paired_differences_interval_and_wins():
    rows = [{"model": "mlp", "method": m, "seed": s, "test_error": e}
            for s, (ours, base) in enumerate([(0.10, 0.12), (0.11, 0.12), (0.13, 0.12)])
            for m, e in (("l2t_dlf", ours), ("ce", base))]
    (paired,) = paired_differences(rows)
    diffs = [-2.0, -1.0, 1.0]
    assert paired["differences"] == pytest.approx(diffs) and paired["wins"] == 2
    mean = sum(diffs) / 3
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / 2)
    assert paired["ci95"] == pytest.approx([mean - 4.303 * sd / math.sqrt(3), mean + 4.303 * sd / math.sqrt(3)])


def test_teacher_updates_average_the_hypergradients_of_several_students():
    """students=2: the logged hypergradient is the mean of the two students' own (first episode, same teacher)."""
    from fairseq_l2t.dev_objectives import get_dev_objective
    from fairseq_l2t.functional_student import FunctionalStudent, SGDConfig
    from fairseq_l2t.hypergradient import Unroll, hypergradient
    from fairseq_l2t.loss_structures import SoftTargetStructure
    from fairseq_l2t.state_features import StudentState
    from fairseq_l2t.teacher import Teacher
    from image_cls.data.batches import eval_batches
    from image_cls.training.teacher_episodes import TeacherTrainingConfig, fresh_student, train_teacher

    splits = load_splits("mnist5k", seed=0)
    config = TeacherTrainingConfig(model="mlp", sgd=SGDConfig(0.05, 0.9, 5e-4), rounds=1, steps_per_round=10,
                                   episode_steps=10, dev_objective="cross_entropy", students=2, seed=4)
    torch.manual_seed(0)
    state = StudentState(10, 1)
    teacher = Teacher(SoftTargetStructure(10, 0.1), state.num_features, 2, feature_names=state.feature_names)
    dev = eval_batches(splits.dev, 500, splits.mean, splits.std)
    own = []
    for index in (0, 1):
        model, stream, tracker, optimizer = fresh_student(splits, config, index, torch.device("cpu"), dev)
        student = FunctionalStudent(model)
        unroll = Unroll(student, teacher, config.sgd, 10, stream.batch_at, dev, get_dev_objective("cross_entropy"),
                        tracker)
        own.append(hypergradient(unroll, student.snapshot(optimizer)))
    mean = torch.cat([(a + b).reshape(-1) / 2 for a, b in zip(own[0].teacher_grads, own[1].teacher_grads)])
    rows = []
    train_teacher(teacher, splits, config, torch.device("cpu"), on_episode=rows.append, progress=False)
    assert rows[0]["hypergradient_norm"] == pytest.approx(float(mean.norm()), rel=1e-6)
    assert rows[0]["dev_objective"] == pytest.approx((own[0].dev_objective + own[1].dev_objective) / 2, rel=1e-6)
    single = torch.cat([g.reshape(-1) for g in own[0].teacher_grads])
    assert not torch.allclose(single, mean)  # the two students really differ


def test_one_seed_has_no_interval():
    rows = [{"model": "mlp", "method": m, "seed": 0, "test_error": e} for m, e in (("l2t_dlf", 0.1), ("ce", 0.2))]
    (paired,) = paired_differences(rows)
    assert paired["ci95"] is None and paired["wins"] == 1
    assert "n/a (one seed)" in format_table([], [paired])
