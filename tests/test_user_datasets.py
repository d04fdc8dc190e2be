"""A user's own images (--dataset npz:PATH and folder:PATH): the CLIs end to end on small generated data, the
split rules, every model at such sizes, and each bad file as one line (docs/bad_input.md lists them)."""
import numpy as np
import pytest
import torch
from PIL import Image

from image_cls.cli import evaluate, train_student, train_teacher
from image_cls.data.image_sets import DatasetUnavailable
from image_cls.data.splits import dataset_spec, load_splits
from image_cls.training.models import build_model

CLASSES = 3


def make_images(n: int, size: int = 16, channels: int | None = None, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (n, size, size[, channels]) noise with a bright band whose place gives the class; labels cycle."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % CLASSES
    images = rng.integers(0, 80, (n, size, size) + ((channels,) if channels else ()), dtype=np.uint8)
    for label in range(CLASSES):
        band = slice(label * size // CLASSES, (label + 1) * size // CLASSES)
        images[labels == label, band] += 150
    return images, labels


def write_npz(path, **arrays):
    np.savez(path, **arrays)
    return path


def standard_arrays(size: int = 16, channels: int | None = None, dev: bool = True) -> dict:
    (x_train, y_train), (x_dev, y_dev), (x_test, y_test) = (
        make_images(n, size, channels, seed) for seed, n in enumerate((300, 50, 60)))
    arrays = {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}
    return {**arrays, "x_dev": x_dev, "y_dev": y_dev} if dev else arrays


def write_tree(root, splits: dict, mode: str | None = None) -> None:
    """PNGs under root/SPLIT/cLABEL/ (SPLIT '' for a flat tree), converted to `mode` when given."""
    for split, (images, labels) in splits.items():
        for i, (image, label) in enumerate(zip(images, labels)):
            folder = root / split / f"c{label}"
            folder.mkdir(parents=True, exist_ok=True)
            picture = Image.fromarray(image)
            (picture.convert(mode) if mode else picture).save(folder / f"{i}.png")


@pytest.fixture
def npz_path(tmp_path):
    return write_npz(tmp_path / "digits.npz", **standard_arrays())


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "tree"
    write_tree(root, {split: make_images(n, 20, 3, seed) for seed, (split, n) in
                      enumerate((("train", 240), ("dev", 50), ("test", 60)))})
    return root


def student(dataset: str, out, model: str = "mlp", *extra: str) -> dict:
    return train_student.main(["--dataset", dataset, "--model", model, "--steps", "20", "--eval-every", "10",
                               "--batch-size", "32", "--no-progress", "--out", str(out), *extra])


def assert_errors_are_rates(summary: dict) -> None:
    for key in ("dev_error", "reward_dev_error", "selection_dev_error", "test_error"):
        assert 0 <= summary[key] <= 1, (key, summary)


def test_student_cli_on_an_npz_then_evaluate_from_elsewhere(tmp_path, npz_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    summary = student("npz:digits.npz", tmp_path / "run", "lenet")
    assert_errors_are_rates(summary)
    assert summary["dataset"] == f"npz:{npz_path}"  # made absolute: the checkpoint reloads it from anywhere
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["model_state"]
    assert state["features.0.weight"].shape == (20, 1, 5, 5)  # one input channel
    assert state["classifier.1.weight"].shape == (500, 50)  # 16x16 pixels: one 50-channel feature after pooling
    assert state["classifier.3.weight"].shape == (CLASSES, 500)
    monkeypatch.chdir(tmp_path / "run")
    evaluated = evaluate.main([str(tmp_path / "run" / "checkpoint.pt"), "--split", "dev"])  # 50 images
    assert evaluated["error"] == pytest.approx(summary["dev_error"])


def test_student_cli_on_an_image_folder(tmp_path, tree):
    summary = student(f"folder:{tree}", tmp_path / "run")
    assert_errors_are_rates(summary)
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["model_state"]
    assert state["layers.1.weight"].shape == (500, 3 * 20 * 20) and state["layers.5.weight"].shape == (CLASSES, 300)
    log = (tmp_path / "run" / "log.csv").read_text().splitlines()
    assert len(log) == 3  # header and two evaluations


def test_teacher_cli_on_an_npz_then_teach_a_student(tmp_path, npz_path):
    summary = train_teacher.main(["--dataset", f"npz:{npz_path}", "--model", "mlp", "--rounds", "1",
                                  "--steps-per-round", "10", "--episode-steps", "10", "--batch-size", "32",
                                  "--no-progress", "--out", str(tmp_path / "teacher")])
    assert summary["episodes"] == 1 and np.isfinite(summary["last_dev_objective"])
    taught = student(f"npz:{npz_path}", tmp_path / "taught", "mlp", "--loss", "teacher", "--teacher",
                     str(tmp_path / "teacher" / "teacher.pt"))
    assert_errors_are_rates(taught)


def test_npz_channels_dtypes_and_a_carved_dev_split(tmp_path):
    arrays = standard_arrays(20, 3, dev=False)
    arrays["x_train"] = arrays["x_train"].astype(np.float64) / 255 - 0.5  # float: used as it is
    splits = load_splits(f"npz:{write_npz(tmp_path / 'rgb.npz', **arrays)}", seed=3)
    assert (splits.in_channels, splits.image_size, splits.num_classes, splits.augment) == (3, 20, CLASSES, False)
    assert splits.train.images.dtype == torch.float32 and splits.test.images.dtype == torch.float32
    assert splits.train.images.min() < 0 and 0 <= splits.test.images.min() and splits.test.images.max() <= 1
    torch.testing.assert_close(splits.test.images, torch.from_numpy(arrays["x_test"]).permute(0, 3, 1, 2) / 255)
    assert splits.mean[0] == pytest.approx(splits.train.images[:, 0].double().mean().item())
    assert splits.std[2] == pytest.approx(splits.train.images[:, 2].double().std(correction=0).item())
    # no x_dev: a seeded tenth of every class (100 each) became dev; train and dev are x_train, disjoint
    assert torch.bincount(splits.dev.labels).tolist() == [10] * CLASSES and len(splits.train) == 270
    both = torch.cat([splits.train.images, splits.dev.images]).flatten(1).unique(dim=0)
    original = torch.from_numpy(arrays["x_train"]).float().permute(0, 3, 1, 2).flatten(1).unique(dim=0)
    assert len(both) == 300 and torch.equal(both, original)
    again, other = (load_splits(f"npz:{tmp_path / 'rgb.npz'}", seed=s) for s in (3, 4))
    assert torch.equal(again.dev.images, splits.dev.images) and not torch.equal(other.dev.images, splits.dev.images)


def test_a_flat_folder_is_split_per_class_and_modes_decide_the_channels(tmp_path):
    images, labels = make_images(90, 16)
    write_tree(tmp_path / "gray", {"": (images, labels)}, mode="L")
    splits = load_splits(f"folder:{tmp_path / 'gray'}", seed=0)
    assert (splits.in_channels, splits.image_size, splits.num_classes) == (1, 16, CLASSES)
    # 30 per class: a tenth (3) test, then a tenth of the other 27 (2) dev
    assert [torch.bincount(s.labels).tolist() for s in (splits.train, splits.dev, splits.test)] == [
        [25] * 3, [2] * 3, [3] * 3]
    every = torch.cat([s.images for s in (splits.train, splits.dev, splits.test)]).flatten(1)
    assert len(every.unique(dim=0)) == 90  # disjoint
    Image.fromarray(np.stack([images[0]] * 3, -1)).save(tmp_path / "gray" / "c0" / "colour.png")
    assert load_splits(f"folder:{tmp_path / 'gray'}", seed=0).in_channels == 3  # one RGB image: all read as RGB


@pytest.mark.parametrize("name", ["mlp", "lenet", "resnet8", "resnet20", "wrn-10-1"])
@pytest.mark.parametrize("channels, size", [(1, 16), (3, 20), (1, 32)])
def test_every_model_takes_user_image_sizes(name, channels, size):
    model = build_model(name, CLASSES, channels, size)
    logits = model(torch.randn(2, channels, size, size))
    assert logits.shape == (2, CLASSES) and torch.isfinite(logits).all()


@pytest.mark.parametrize("main", [train_student.main, train_teacher.main])
def test_lenet_names_its_minimum_size(tmp_path, capsys, main):
    with pytest.raises(ValueError, match="LeNet needs images of at least 16x16 pixels, got 15x15"):
        build_model("lenet", CLASSES, 1, 15)
    write_npz(tmp_path / "small.npz", **standard_arrays(size=15))
    with pytest.raises(SystemExit) as info:
        main(["--dataset", f"npz:{tmp_path / 'small.npz'}", "--model", "lenet", "--no-progress",
              "--out", str(tmp_path / "run")])
    lines = capsys.readouterr().err.strip().splitlines()
    assert info.value.code == 2 and len(lines) == 1 and "at least 16x16 pixels, got 15x15" in lines[0], lines
    assert not (tmp_path / "run").exists()


def test_dataset_specs_are_checked_and_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert dataset_spec("npz:./a/../data.npz") == f"npz:{tmp_path / 'data.npz'}"
    assert dataset_spec("folder:imgs") == f"folder:{tmp_path / 'imgs'}" and dataset_spec("mnist") == "mnist"
    for bad, expected in (("npz:", "'npz:' names no path; write npz:PATH"),
                          ("svhn", "invalid choice: 'svhn' (choose from mnist5k, fashion_mnist, mnist, cifar10, "
                                   "cifar100, npz:PATH, folder:PATH)")):
        with pytest.raises(ValueError, match="^" + expected.replace("(", r"\(").replace(")", r"\)") + "$"):
            dataset_spec(bad)


# Bad npz files: a change to standard_arrays() (None removes the array) or raw file bytes, and the expected line.
def _one_hot(arrays):
    return {**arrays, "y_train": np.eye(CLASSES, dtype=np.int64)[arrays["y_train"]]}


BAD_NPZ = {
    "missing_file": (None, "npz file {path} does not exist; check the path"),
    "garbage": (b"\x00not a zip" * 10, "npz file {path} is not an .npz archive (numpy.savez writes a zip"),
    "npy_not_npz": ("npy", "npz file {path} is not an .npz archive"),
    "object_array": (lambda a: {**a, "y_dev": a["y_dev"].astype(object)}, "cannot be read (ValueError: Object arrays"),
    "corrupt_member": ("corrupt", "cannot be read (BadZipFile: Bad CRC-32"),
    "no_x_test": (lambda a: {**a, "x_test": None}, "has no array 'x_test' (it has x_dev, x_train, y_dev, y_test"),
    "x_dev_without_y_dev": (lambda a: {**a, "y_dev": None}, "has no array 'y_dev'"),
    "unknown_array": (lambda a: {**a, "x_valid": a["x_dev"]}, "holds arrays this format does not know (x_valid)"),
    "length_mismatch": (lambda a: {**a, "y_train": a["y_train"][:-1]}, "x_train has 300 images but y_train has 299"),
    "float_labels": (lambda a: {**a, "y_train": a["y_train"] * 1.0}, "y_train is float64; labels must be integer"),
    "one_hot_labels": (_one_hot, "y_train has shape (300, 3); labels must be 1-D class indices"),
    "negative_label": (lambda a: {**a, "y_dev": a["y_dev"] - 1}, "y_dev holds the negative label -1"),
    "label_out_of_range": (lambda a: {**a, "y_test": a["y_test"] + 3}, "y_test holds label 5 but the training "
                                                                       "labels are 0..2"),
    "class_missing_in_train": (lambda a: {**a, "y_train": a["y_train"] * 2}, "y_train has no image of class 1"),
    "single_class": (lambda a: {**a, "y_train": a["y_train"] * 0, "y_dev": a["y_dev"] * 0, "y_test": a["y_test"] * 0},
                     "y_train has a single class"),
    "images_rank_2": (lambda a: {**a, "x_train": a["x_train"].reshape(300, -1)}, "x_train has shape (300, 256); "
                                                                                 "images must be (N, H, W) or"),
    "channels_first": (lambda a: {**a, "x_train": np.repeat(a["x_train"][:, None], 3, 1)},
                       "x_train has shape (300, 3, 16, 16)"),
    "int_images": (lambda a: {**a, "x_test": a["x_test"].astype(np.int64)}, "x_test is int64; images must be uint8"),
    "nan_pixels": (lambda a: {**a, "x_dev": np.where(np.arange(16) == 3, np.nan, a["x_dev"] / 255.0)},
                   "x_dev holds NaN or infinite values"),
    "overflow_to_inf": (lambda a: {**a, "x_dev": a["x_dev"] * 1e300}, "x_dev holds NaN or infinite values"),
    "test_shape_differs": (lambda a: {**a, "x_test": make_images(60, 20)[0]},
                           "x_test images are (20, 20, 1) (H, W, C) but x_train's are (16, 16, 1)"),
    "empty_test": (lambda a: {**a, "x_test": a["x_test"][:0], "y_test": a["y_test"][:0]}, "x_test holds no images"),
    "not_square": (lambda a: {k: v[:, :, :12] if k.startswith("x") else v for k, v in a.items()},
                   "images are 16x12 (height x width) but the models take square images; fix: crop or pad them "
                   "to a square"),
    "too_few_to_carve_dev": (lambda a: {"x_train": a["x_train"][:3], "y_train": a["y_train"][:3],
                                        "x_test": a["x_test"], "y_test": a["y_test"]},
                             "too few training images to carve a dev split (no class has 2 images)"),
}


@pytest.mark.parametrize("case", sorted(BAD_NPZ))
def test_bad_npz_files_are_one_line(tmp_path, case):
    change, expected = BAD_NPZ[case]
    path = tmp_path / "data.npz"
    if isinstance(change, bytes):
        path.write_bytes(change)
    elif change == "npy":
        with path.open("wb") as handle:
            np.save(handle, standard_arrays()["x_train"])
    elif change == "corrupt":  # one flipped byte inside x_train's data
        raw = bytearray(write_npz(path, **standard_arrays()).read_bytes())
        raw[1000] ^= 0xFF
        path.write_bytes(bytes(raw))
    elif change is not None:
        arrays = change(standard_arrays())
        write_npz(path, **{k: v for k, v in arrays.items() if v is not None})
    with pytest.raises(DatasetUnavailable) as info:
        load_splits(f"npz:{path}")
    assert "\n" not in str(info.value) and expected.format(path=path) in str(info.value), str(info.value)


def _unreadable(root):
    (root / "train" / "c1" / "0.png").write_bytes(b"not a png")


def _truncated(root):
    png = root / "test" / "c2" / "2.png"
    png.write_bytes(png.read_bytes()[:80])


def _other_size(root):
    Image.new("RGB", (16, 16)).save(root / "dev" / "c0" / "big.png")


def _empty_class(root):
    for png in (root / "train" / "c2").iterdir():
        png.unlink()


def _extra_class(root):
    (root / "test" / "fox").mkdir()


def _images_only(root):
    for split in ("train", "dev", "test"):
        for png in (root / split).rglob("*.png"):
            png.unlink()


def _single_class(root):
    for split in ("train", "dev", "test"):
        for label in ("c1", "c2"):
            (root / split / label).rename(root / split / "c0" / label)


BAD_FOLDERS = {
    "missing_folder": (None, "folder {root}/nowhere does not exist; check the path"),
    "no_test_folder": (lambda root: (root / "test").rename(root / "later"),
                       "folder {root} has train/, dev/ but not both train/ and test/"),
    "no_class_folders": (lambda root: (root / "flat").mkdir(), "folder {root}/flat has no class folders"),
    "no_images": (_images_only, "folder {root}/train has no images (.jpg .jpeg .png"),
    "class_lists_differ": (_extra_class, "class folders differ between {root}/train (c0, c1, c2) and {root}/test "
                                         "(c0, c1, c2, fox)"),
    "empty_class_in_train": (_empty_class, "class folder {root}/train/c2 has no images; every class needs training"),
    "single_class": (_single_class, "folder {root}/train has a single class folder (c0); classification needs at "
                                    "least 2"),
    "unreadable_image": (_unreadable, "image {root}/train/c1/0.png cannot be read (UnidentifiedImageError"),
    "truncated_image": (_truncated, "image {root}/test/c2/2.png cannot be read (OSError"),
    "other_size": (_other_size, "image {root}/dev/c0/big.png is 16x16 pixels but {root}/train/c0/0.png is 8x8; "
                                "fix: resize the images to one size"),
}


@pytest.mark.parametrize("case", sorted(BAD_FOLDERS))
def test_bad_image_folders_are_one_line(tmp_path, case):
    change, expected = BAD_FOLDERS[case]
    root = tmp_path / "tree"
    write_tree(root, {split: make_images(9, 8, 3, seed) for seed, split in enumerate(("train", "dev", "test"))})
    spec = f"folder:{root / 'nowhere'}" if change is None else f"folder:{root}"
    if case == "no_class_folders":
        spec = f"folder:{root / 'flat'}"
    if change is not None:
        change(root)
    with pytest.raises(DatasetUnavailable) as info:
        load_splits(spec)
    assert "\n" not in str(info.value) and expected.format(root=root) in str(info.value), str(info.value)


@pytest.mark.parametrize("main", [train_student.main, train_teacher.main])
def test_the_clis_print_one_line_and_write_nothing(tmp_path, capsys, main):
    for dataset, expected in ((f"npz:{tmp_path / 'no.npz'}", "does not exist; check the path"),
                              (f"folder:{tmp_path}", "has no class folders")):
        with pytest.raises(SystemExit) as info:
            main(["--dataset", dataset, "--no-progress", "--out", str(tmp_path / "run")])
        lines = capsys.readouterr().err.strip().splitlines()
        assert info.value.code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0]
    with pytest.raises(SystemExit):
        main(["--dataset", "npz:", "--out", str(tmp_path / "run")])
    assert "argument --dataset: 'npz:' names no path; write npz:PATH" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()

