from urllib.error import URLError

import numpy as np
import pytest
import torch
import torchvision

from image_cls.data.batches import BatchStream, eval_batches, pad_crop_flip
from image_cls.data.image_sets import DatasetUnavailable, ImageSet, per_class_parts
from image_cls.data.splits import load_splits


@pytest.fixture(scope="module")
def mnist5k():
    return load_splits("mnist5k", seed=0)


def _fake_cifar_class(num_classes):
    """A torchvision-like CIFAR class with generated images, so CIFAR code paths run offline."""

    class FakeCifar:
        def __init__(self, root, train, download):
            n = 50_000 if train else 10_000
            self.data = np.resize(np.arange(251, dtype=np.uint8), (n, 32, 32, 3))
            self.targets = (np.arange(n) % num_classes).tolist()
            self.classes = [str(c) for c in range(num_classes)]

    return FakeCifar


def test_mnist5k_split_sizes_and_shapes(mnist5k):
    assert (len(mnist5k.train), len(mnist5k.dev), len(mnist5k.test)) == (3000, 1000, 1000)
    assert mnist5k.train.images.shape[1:] == (1, 28, 28) and mnist5k.train.images.dtype == torch.uint8
    assert (mnist5k.num_classes, mnist5k.in_channels, mnist5k.image_size) == (10, 1, 28)
    assert not mnist5k.augment and mnist5k.name == "mnist5k"
    for split, per_class in ((mnist5k.train, 300), (mnist5k.dev, 100), (mnist5k.test, 100)):
        assert torch.bincount(split.labels, minlength=10).tolist() == [per_class] * 10


def test_mnist5k_splits_are_disjoint(mnist5k):
    seen = {}
    for name, split in (("train", mnist5k.train), ("dev", mnist5k.dev), ("test", mnist5k.test)):
        for image in split.images.reshape(len(split), -1):
            seen.setdefault(image.numpy().tobytes(), set()).add(name)
    assert all(len(names) == 1 for names in seen.values())
    assert len(seen) > 4950  # the digits themselves are (almost) all distinct


def test_stratified_indices_are_disjoint_and_balanced():
    labels = torch.arange(50) % 5
    parts = per_class_parts(labels, lambda count: (6, 2, 2), seed=3)
    joined = torch.cat(parts)
    assert len(joined) == 50 and len(joined.unique()) == 50
    assert [torch.bincount(labels[p]).tolist() for p in parts] == [[6] * 5, [2] * 5, [2] * 5]
    with pytest.raises(ValueError, match="fewer"):
        per_class_parts(labels, lambda count: (8, 2, 2), seed=3)


def test_mnist5k_split_depends_only_on_the_seed(mnist5k):
    again, other = load_splits("mnist5k", seed=0), load_splits("mnist5k", seed=1)
    assert torch.equal(again.dev.images, mnist5k.dev.images)
    assert torch.equal(again.train.labels, mnist5k.train.labels)
    assert not torch.equal(other.dev.images, mnist5k.dev.images)


def test_mean_and_std_come_from_the_train_split(mnist5k):
    pixels = mnist5k.train.images.double() / 255
    assert mnist5k.mean[0] == pytest.approx(pixels.mean().item(), abs=1e-9)
    assert mnist5k.std[0] == pytest.approx(pixels.std(unbiased=False).item(), abs=1e-9)


def test_batch_stream_replays_each_step_exactly(mnist5k):
    stream = BatchStream(mnist5k.train, 64, seed=5, mean=mnist5k.mean, std=mnist5k.std, augment=True)
    first = stream.batch_at(7)
    stream.batch_at(200)  # move the cached epoch away
    second = BatchStream(mnist5k.train, 64, 5, mnist5k.mean, mnist5k.std, True).batch_at(7)
    for a, b, c in zip(first, stream.batch_at(7), second):
        assert torch.equal(a, b) and torch.equal(a, c)
    assert first[0].shape == (64, 1, 28, 28) and first[0].dtype == torch.float32
    assert first[1].shape == (64,) and first[1].dtype == torch.int64
    assert not torch.equal(stream.batch_at(8)[0], first[0])


def test_batch_stream_reshuffles_every_epoch_and_drops_the_partial_batch():
    data = ImageSet(torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1), torch.arange(10))
    stream = BatchStream(data, 3, seed=0, mean=(0.0,), std=(1.0,), augment=False)
    assert stream.batches_per_epoch == 3
    epoch = lambda e: torch.cat([stream.batch_at(3 * e + k)[1] for k in range(3)])
    first, second = epoch(0), epoch(1)
    assert len(first.unique()) == 9 and len(second.unique()) == 9
    assert not torch.equal(first, second)
    torch.testing.assert_close(stream.batch_at(0)[0].flatten(), stream.batch_at(0)[1].float() / 255)
    other_seed = BatchStream(data, 3, seed=1, mean=(0.0,), std=(1.0,), augment=False)
    assert not torch.equal(torch.cat([other_seed.batch_at(k)[1] for k in range(3)]), first)


def test_normalised_train_batches_have_zero_mean_and_unit_std(mnist5k):
    stream = BatchStream(mnist5k.train, 100, seed=0, mean=mnist5k.mean, std=mnist5k.std, augment=False)
    images = torch.cat([stream.batch_at(k)[0] for k in range(stream.batches_per_epoch)])
    assert abs(images.mean().item()) < 1e-3
    assert images.std().item() == pytest.approx(1.0, abs=1e-2)


def test_augmentation_moves_pixels_but_keeps_shape_and_content():
    images = torch.rand(16, 3, 32, 32)
    augmented = pad_crop_flip(images, torch.Generator().manual_seed(0))
    assert augmented.shape == images.shape and not torch.equal(augmented, images)
    # Every crop overlaps the original by at least 24 x 24 pixels; pixels outside are zero padding.
    assert ((augmented == 0).flatten(1).sum(1) <= 3 * (32 * 32 - 24 * 24)).all()
    untouched = pad_crop_flip(images, torch.Generator().manual_seed(0), padding=0)
    assert all(torch.equal(u, x) or torch.equal(u, x.flip(-1)) for u, x in zip(untouched, images))


def test_eval_batches_cover_every_example_once_in_order(mnist5k):
    batches = eval_batches(mnist5k.dev, 300, mnist5k.mean, mnist5k.std)
    assert [len(labels) for _, labels in batches] == [300, 300, 300, 100]
    assert torch.equal(torch.cat([labels for _, labels in batches]), mnist5k.dev.labels)
    expected = (mnist5k.dev.images[:300].float() / 255 - mnist5k.mean[0]) / mnist5k.std[0]
    torch.testing.assert_close(batches[0][0], expected)


@pytest.mark.parametrize("batch_size", [0, 3001])
def test_bad_batch_sizes_are_refused(mnist5k, batch_size):
    with pytest.raises(ValueError, match="batch size"):
        BatchStream(mnist5k.train, batch_size, 0, mnist5k.mean, mnist5k.std, False)
    with pytest.raises(ValueError, match="batch size"):
        eval_batches(mnist5k.train, batch_size, mnist5k.mean, mnist5k.std)


def test_unknown_dataset_lists_the_choices():
    with pytest.raises(ValueError, match="mnist5k.*cifar100"):
        load_splits("svhn")


def test_missing_cifar_files_without_download_is_one_clear_line(tmp_path):
    with pytest.raises(DatasetUnavailable) as info:
        load_splits("cifar10", root=str(tmp_path), download=False)
    message = str(info.value)
    assert "\n" not in message
    assert "cifar10" in message and str(tmp_path) in message and "--download" in message and "mnist5k" in message
    assert isinstance(info.value.__cause__, RuntimeError)


@pytest.mark.parametrize("error", [URLError("no network"), OSError("Network is unreachable")])
def test_failed_download_is_one_clear_line(tmp_path, monkeypatch, error):
    def offline(*args, **kwargs):
        raise error

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", offline)
    with pytest.raises(DatasetUnavailable, match="download failed") as info:
        load_splits("cifar10", root=str(tmp_path), download=True)
    assert "\n" not in str(info.value) and info.value.__cause__ is error


def test_cifar_splits_from_torchvision_arrays(monkeypatch):
    monkeypatch.setattr(torchvision.datasets, "CIFAR100", _fake_cifar_class(100))
    splits = load_splits("cifar100", seed=0)
    assert (len(splits.train), len(splits.dev), len(splits.test)) == (45_000, 5_000, 10_000)
    assert splits.train.images.shape[1:] == (3, 32, 32) and splits.train.images.dtype == torch.uint8
    assert (splits.num_classes, splits.in_channels, splits.image_size, splits.augment) == (100, 3, 32, True)
    assert len(splits.mean) == 3 and all(s > 0 for s in splits.std)
    stream = BatchStream(splits.train, 128, 0, splits.mean, splits.std, splits.augment)
    assert stream.batch_at(0)[0].shape == (128, 3, 32, 32)


def test_empty_split_is_refused(monkeypatch):
    class EmptyTest(_fake_cifar_class(10)):
        def __init__(self, root, train, download):
            super().__init__(root, train, download)
            if not train:
                self.data, self.targets = self.data[:0], []

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", EmptyTest)
    with pytest.raises(DatasetUnavailable, match="empty test split"):
        load_splits("cifar10")
