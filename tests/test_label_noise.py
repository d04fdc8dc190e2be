"""Label noise as data: the realised rate within binomial tolerance, flips only where the noise model puts them,
dev and test untouched, the same seed giving the same labels, the record in the run's summary, the trusted
dev set of N per class, and one line (nothing written) for every bad noise option."""
import json
import math

import numpy as np
import pytest
import torch

from image_cls.cli import train_student, train_teacher
from image_cls.data.label_noise import MAPPINGS, LabelNoise, corrupt, parse_label_noise, realised_transition
from image_cls.data.splits import load_splits

Z = 4.5  # binomial tolerance in standard deviations: a false alarm about once in 300,000 draws


@pytest.fixture(scope="module")
def clean():
    return load_splits("mnist5k", seed=0)


def within_binomial(observed: float, rate: float, n: int) -> bool:
    return abs(observed - rate) <= Z * math.sqrt(rate * (1 - rate) / n)


@pytest.mark.parametrize("rate", [0.2, 0.4, 0.8])
def test_symmetric_noise_flips_the_asked_share_to_every_other_class(clean, rate):
    noisy = load_splits("mnist5k", seed=0, label_noise=parse_label_noise(f"symmetric:{rate}"))
    flipped = noisy.train.labels != clean.train.labels
    n = len(flipped)
    assert within_binomial(flipped.double().mean().item(), rate, n)
    assert noisy.noise["noisy_share"] == pytest.approx(flipped.double().mean().item())
    # a flipped label is uniform over the other 9 classes: every class gets about 1/9 of the flips of class 0
    zeros = flipped & (clean.train.labels == 0)
    landed = torch.bincount(noisy.train.labels[zeros], minlength=10).double() / zeros.sum()
    assert landed[0] == 0 and all(within_binomial(v.item(), 1 / 9, int(zeros.sum())) for v in landed[1:])


def test_asymmetric_noise_flips_only_the_mapped_classes_into_their_targets(clean):
    noisy = load_splits("mnist5k", seed=0, label_noise=parse_label_noise("asymmetric:0.3"))
    mapping = MAPPINGS["mnist5k"]
    for label in range(10):
        members = clean.train.labels == label
        flipped = noisy.train.labels[members] != label
        if label in mapping:
            assert within_binomial(flipped.double().mean().item(), 0.3, int(members.sum()))
            assert (noisy.train.labels[members][flipped] == mapping[label]).all()
        else:
            assert not flipped.any()
    expected = realised_transition(clean.train.labels, noisy.train.labels, 10)
    torch.testing.assert_close(torch.tensor(noisy.noise["transition"], dtype=torch.float64), expected)
    torch.testing.assert_close(expected.sum(1), torch.ones(10, dtype=torch.float64))


def test_only_training_labels_change_and_the_same_seed_gives_the_same_labels(clean):
    noise = parse_label_noise("symmetric:0.4")
    noisy, again, other = (load_splits("mnist5k", seed=s, label_noise=noise) for s in (0, 0, 1))
    assert torch.equal(noisy.train.images, clean.train.images)
    for split in ("dev", "test"):
        assert torch.equal(getattr(noisy, split).labels, getattr(clean, split).labels)
        assert torch.equal(getattr(noisy, split).images, getattr(clean, split).images)
    assert torch.equal(noisy.train.labels, again.train.labels)
    assert not torch.equal(noisy.train.labels, other.train.labels)
    assert (noisy.mean, noisy.std) == (clean.mean, clean.std)  # the images' statistics do not see the labels


def test_a_trusted_dev_set_of_n_per_class_is_a_seeded_subset_of_dev(clean):
    trusted = load_splits("mnist5k", seed=0, dev_per_class=20)
    assert torch.equal(torch.bincount(trusted.dev.labels), torch.full((10,), 20))
    rows = {tuple(image.flatten().tolist()) for image in clean.dev.images}
    assert all(tuple(image.flatten().tolist()) in rows for image in trusted.dev.images)
    assert torch.equal(load_splits("mnist5k", seed=0, dev_per_class=20).dev.images, trusted.dev.images)


def test_a_user_mapping_and_the_none_model(clean):
    noise = LabelNoise("asymmetric", 0.4, ((1, 0), (0, 1)))
    noisy, record = corrupt(clean.train, noise, "npz:anything", 10, seed=3)
    moved = noisy.labels != clean.train.labels
    assert set(clean.train.labels[moved].tolist()) == {0, 1} and record.noise == "asymmetric:0.4"
    same, record = corrupt(clean.train, LabelNoise(), "mnist5k", 10, seed=3)
    assert torch.equal(same.labels, clean.train.labels) and record.noisy_share == 0.0


COMMON = ["--dataset", "mnist5k", "--model", "mlp", "--steps", "4", "--eval-every", "2", "--no-progress",
          "--no-tensorboard"]


def test_the_summary_records_the_noise_and_the_trusted_set(tmp_path):
    summary = train_student.main(COMMON + ["--label-noise", "asymmetric:0.4", "--dev-per-class", "10",
                                           "--out", str(tmp_path / "run")])
    saved = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert saved["label_noise"]["noise"] == "asymmetric:0.4" and saved["dev_images"] == 100
    assert 0.15 < saved["label_noise"]["noisy_share"] < 0.25  # 5 of 10 classes at 0.4
    assert summary["selected"]["step"] in (2, 4)


def npz_dataset(path, classes: int = 3):
    generator = np.random.default_rng(0)
    arrays = {f"{axis}_{split}": (generator.integers(0, 255, (n, 16, 16), dtype=np.uint8) if axis == "x" else
                                   np.arange(n) % classes)
              for split, n in (("train", 60), ("dev", 30), ("test", 30)) for axis in "xy"}
    np.savez(path, **arrays)
    return f"npz:{path}"


@pytest.mark.parametrize("argv, expected", [
    (["--label-noise", "symmetric:1.0"], "the label-noise rate must be in [0, 1), got 1.0"),
    (["--label-noise", "symmetric:-0.1"], "the label-noise rate must be in [0, 1), got -0.1"),
    (["--label-noise", "symmetric:nan"], "the label-noise rate must be in [0, 1)"),
    (["--label-noise", "asymmetric:0.5"], "asymmetric noise needs a rate below 0.5"),
    (["--label-noise", "gaussian:0.2"], "unknown label noise 'gaussian:0.2'"),
    (["--label-noise", "symmetric"], "unknown label noise 'symmetric'"),
    (["--label-noise", "asymmetric:0.2", "--dataset", "NPZ"], "asymmetric noise on npz:"),
    (["--label-noise", "asymmetric:0.2", "--noise-mapping", "MAP:{\"12\": 1}"], "names class 12"),
    (["--label-noise", "asymmetric:0.2", "--noise-mapping", "MAP:{\"3\": 3}"], "maps class 3 to itself"),
    (["--label-noise", "asymmetric:0.2", "--noise-mapping", "MAP:[1, 2]"], "must hold a non-empty JSON object"),
    (["--label-noise", "symmetric:0.2", "--noise-mapping", "MAP:{\"1\": 2}"], "--noise-mapping gives the flips"),
    (["--dev-per-class", "101"], "--dev-per-class 101: the dev split holds only 100 images of class 0"),
])
@pytest.mark.parametrize("main", [train_student.main, train_teacher.main])
def test_bad_noise_options_are_one_line_and_write_nothing(tmp_path, capsys, main, argv, expected):
    argv = list(argv)
    for i, value in enumerate(argv):
        if value == "NPZ":
            argv[i] = npz_dataset(tmp_path / "mine.npz")
        elif value.startswith("MAP:"):
            (tmp_path / "map.json").write_text(value[4:])
            argv[i] = str(tmp_path / "map.json")
    with pytest.raises(SystemExit) as info:
        main(["--dataset", "mnist5k", "--no-progress", *argv, "--out", str(tmp_path / "out")])
    assert info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    # parse-time errors come after argparse's usage lines, as every option's do; the rest are one line
    assert (len(lines) == 1 or lines[0].startswith("usage:")) and "error: " in lines[-1] and expected in lines[-1], lines
    assert not (tmp_path / "out").exists()


def test_the_dev_selected_checkpoint_is_the_lowest_selection_half_error_and_scores_its_own_test(tmp_path):
    from image_cls.cli import evaluate
    from image_cls.run_files.plots import read_log

    out = tmp_path / "run"
    summary = train_student.main(COMMON[:4] + ["--steps", "60", "--eval-every", "10", "--lr", "0.2", "--no-progress",
                                               "--no-tensorboard", "--label-noise", "symmetric:0.6",
                                               "--out", str(out)])
    log = read_log(out / "log.csv")
    best = min(range(len(log["step"])), key=lambda i: (log["selection_dev_error"][i], i))
    assert summary["selected"]["step"] == log["step"][best]
    assert summary["selected"]["selection_dev_error"] == pytest.approx(log["selection_dev_error"][best])
    assert "test_accuracy" not in log  # test is scored at the end only, without --test-curve
    scored = evaluate.main([str(out / "checkpoint_selected.pt"), "--split", "test"])
    assert scored["error"] == pytest.approx(summary["selected"]["test_error"])
    final = evaluate.main([str(out / "checkpoint.pt"), "--split", "test"])
    assert final["error"] == pytest.approx(summary["test_error"])


@pytest.mark.parametrize("argv, expected", [
    (["--loss", "glc"], "--loss glc needs --glc-model CHECKPOINT"),
    (["--glc-model", "ce.pt"], "--glc-model needs --loss glc"),
    (["--loss", "glc", "--glc-model", "absent.pt"], "student checkpoint absent.pt does not exist"),
    (["--gce-q", "1.5"], "argument --gce-q: must be in (0, 1], got 1.5"),
    (["--gce-q", "0"], "argument --gce-q: must be a positive number, got 0"),
])
def test_bad_baseline_options_are_one_line_and_write_nothing(tmp_path, capsys, argv, expected):
    with pytest.raises(SystemExit) as info:
        train_student.main(["--dataset", "mnist5k", "--no-progress", *argv, "--out", str(tmp_path / "out")])
    assert info.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert "error: " in last and expected in last, last
    assert not (tmp_path / "out").exists()
