"""A user's own images as train/dev/test splits: `--dataset npz:PATH` or `--dataset folder:PATH`.

So that the CLIs run on any small image-classification task without code:

- npz:PATH, a NumPy archive (numpy.savez) of x_train, y_train, x_test, y_test
  and optionally x_dev, y_dev (both or neither), and no other arrays.  Images are
  (N, H, W) (one channel) or (N, H, W, C) with C 1 or 3, channels last as numpy
  and PIL hold them; uint8 is scaled to [0, 1], float is used as it is and must
  be finite.  Labels are integer class indices 0..K-1, K = 1 + the largest
  training label, and every class has training images.
- folder:PATH, torchvision's ImageFolder layout: PATH/train and PATH/test (and
  optionally PATH/dev) with one subfolder per class, the same class folders in
  each; or class folders right in PATH, whose test split is carved like a dev
  split (below).  Images all have one size; grayscale ones (modes 1, L, LA) give
  one channel, unless any image is in colour: then all are read as RGB (alpha
  dropped).
- Without a dev split, a seeded tenth of every training class (at least one
  image where the class has two) becomes dev.  Images must be square, because
  the models take one image size.

Every problem with the files stops with a one-line DatasetUnavailable naming
the file and the fix.
"""
from __future__ import annotations

import zipfile
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from .image_sets import DatasetUnavailable, ImageSet, per_class_parts, subset

_SPLITS = ("train", "dev", "test")
_NPZ_ARRAYS = tuple(f"{axis}_{split}" for split in _SPLITS for axis in "xy")
_NPZ_FIX = ("fix: save it with numpy.savez(PATH, x_train=..., y_train=..., x_test=..., y_test=...) "
            "(x_dev, y_dev optional)")
_GRAY_BANDS = (("1",), ("L",), ("L", "A"))

Arrays = tuple[Tensor, Tensor]  # images N x C x H x W (uint8 or float32), int64 labels


def user_splits(spec: str, seed: int) -> tuple[ImageSet, ImageSet, ImageSet, int]:
    """(train, dev, test, number of classes) of `npz:PATH` or `folder:PATH`; missing splits are carved with `seed`."""
    kind, _, path = spec.partition(":")
    parts, num_classes = _read_npz(Path(path)) if kind == "npz" else _read_folder(Path(path))
    sets = {split: ImageSet(*arrays) for split, arrays in parts.items()}
    height, width = sets["train"].images.shape[-2:]
    if height != width:
        raise DatasetUnavailable(f"dataset {spec}: images are {height}x{width} (height x width) but the models take "
                                 f"square images; fix: crop or pad them to a square")
    if "test" not in sets:
        sets["test"], sets["train"] = _carve(spec, sets["train"], "test", seed + 1)
    if "dev" not in sets:
        sets["dev"], sets["train"] = _carve(spec, sets["train"], "dev", seed)
    return sets["train"], sets["dev"], sets["test"], num_classes


def _carve(spec: str, data: ImageSet, split: str, seed: int) -> tuple[ImageSet, ImageSet]:
    """(a seeded tenth of every class, at least one image where the class has two; the rest)."""
    def tenth_and_rest(count: int) -> tuple[int, int]:
        carved = min(count - 1, max(1, count // 10))
        return carved, count - carved

    carved, rest = (subset(data, p) for p in per_class_parts(data.labels, tenth_and_rest, seed))
    if len(carved) == 0:
        raise DatasetUnavailable(f"dataset {spec}: too few training images to carve a {split} split (no class has "
                                 f"2 images); fix: add images or a {split} split")
    return carved, rest


def _read_npz(path: Path) -> tuple[dict[str, Arrays], int]:
    """The splits of an npz archive, checked one array at a time, then across arrays."""
    source = f"npz file {path}"
    if not path.is_file():
        raise DatasetUnavailable(f"{source} does not exist; check the path")
    arrays = _npz_arrays(path)
    unknown = sorted(set(arrays) - set(_NPZ_ARRAYS))
    if unknown:
        raise DatasetUnavailable(f"{source} holds arrays this format does not know ({', '.join(unknown)}); {_NPZ_FIX}")
    splits = [s for s in _SPLITS if s != "dev" or {"x_dev", "y_dev"} & set(arrays)]
    for name in (f"{axis}_{split}" for split in splits for axis in "xy"):
        if name not in arrays:
            raise DatasetUnavailable(f"{source} has no array {name!r} (it has {', '.join(sorted(arrays)) or 'none'}); "
                                     f"{_NPZ_FIX}")
    images = {s: _npz_images(source, f"x_{s}", arrays[f"x_{s}"]) for s in splits}
    labels = {s: _npz_labels(source, s, arrays[f"y_{s}"], len(images[s])) for s in splits}
    num_classes = int(labels["train"].max()) + 1
    missing = np.flatnonzero(np.bincount(labels["train"], minlength=num_classes) == 0)
    if num_classes < 2 or missing.size:
        why = "a single class" if num_classes < 2 else f"no image of class {missing[0]}"
        raise DatasetUnavailable(f"{source}: y_train has {why}; labels must be class indices 0..K-1, K >= 2, "
                                 f"every class with training images")
    for split in splits:
        if labels[split].max() >= num_classes:
            raise DatasetUnavailable(f"{source}: y_{split} holds label {labels[split].max()} but the training labels "
                                     f"are 0..{num_classes - 1}; every class needs training images")
        if images[split].shape[1:] != images["train"].shape[1:]:
            raise DatasetUnavailable(f"{source}: x_{split} images are {images[split].shape[1:]} (H, W, C) but "
                                     f"x_train's are {images['train'].shape[1:]}; every split needs the same image "
                                     f"shape")
    if any(x.dtype == np.float32 for x in images.values()):  # one dtype for all splits: uint8 ones scaled here
        images = {s: x.astype(np.float32) / 255 if x.dtype == np.uint8 else x for s, x in images.items()}
    return {s: (torch.from_numpy(np.ascontiguousarray(images[s].transpose(0, 3, 1, 2))),
                torch.from_numpy(labels[s])) for s in splits}, num_classes


def _npz_arrays(path: Path) -> dict[str, np.ndarray]:
    """Every array of the archive; checked as a zip first, because np.load reads anything else as a pickle."""
    if not zipfile.is_zipfile(path):
        raise DatasetUnavailable(f"npz file {path} is not an .npz archive (numpy.savez writes a zip of .npy "
                                 f"arrays); {_NPZ_FIX}")
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as err:
        detail = " ".join(str(err).split())[:200]
        raise DatasetUnavailable(f"npz file {path} cannot be read ({type(err).__name__}: {detail}); it is corrupt, "
                                 f"or holds object arrays; {_NPZ_FIX}") from err


def _npz_images(source: str, name: str, array: np.ndarray) -> np.ndarray:
    """N x H x W x C, uint8 or float32 (finite)."""
    images = array[..., np.newaxis] if array.ndim == 3 else array
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise DatasetUnavailable(f"{source}: {name} has shape {array.shape}; images must be (N, H, W) or "
                                 f"(N, H, W, C) with C 1 or 3, channels last (for N x C x H x W arrays save "
                                 f"x.transpose(0, 2, 3, 1))")
    if len(images) == 0:
        raise DatasetUnavailable(f"{source}: {name} holds no images; every split needs some")
    if images.dtype == np.uint8:
        return images
    if not np.issubdtype(images.dtype, np.floating):
        raise DatasetUnavailable(f"{source}: {name} is {images.dtype}; images must be uint8 (0..255, scaled to "
                                 f"[0, 1]) or float (used as they are); fix: x.astype(np.uint8) for 0..255 pixels")
    with np.errstate(over="ignore"):  # float64 beyond float32's range becomes inf, refused below
        images = images.astype(np.float32)
    if not np.isfinite(images).all():
        raise DatasetUnavailable(f"{source}: {name} holds NaN or infinite values (as float32); fix: replace them")
    return images


def _npz_labels(source: str, split: str, array: np.ndarray, count: int) -> np.ndarray:
    """int64 class indices, one per image, none negative."""
    name = f"y_{split}"
    if array.ndim != 1:
        raise DatasetUnavailable(f"{source}: {name} has shape {array.shape}; labels must be 1-D class indices "
                                 f"(for one-hot labels save y.argmax(1))")
    if not np.issubdtype(array.dtype, np.integer):
        raise DatasetUnavailable(f"{source}: {name} is {array.dtype}; labels must be integer class indices 0..K-1 "
                                 f"(fix: y.astype(np.int64) if they are whole numbers)")
    if len(array) != count:
        raise DatasetUnavailable(f"{source}: x_{split} has {count} images but {name} has {len(array)} labels")
    if array.min() < 0:
        raise DatasetUnavailable(f"{source}: {name} holds the negative label {array.min()}; labels must be class "
                                 f"indices 0..K-1")
    return array.astype(np.int64)


def _read_folder(root: Path) -> tuple[dict[str, Arrays], int]:
    """The splits of an ImageFolder tree (PATH/train, PATH/test, optional PATH/dev; or one tree in PATH: train)."""
    from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset  # slow import: folders only

    if not root.is_dir():
        raise DatasetUnavailable(f"folder {root} does not exist; check the path")
    folders = {s: root / s for s in _SPLITS if (root / s).is_dir()}
    if folders and not {"train", "test"} <= folders.keys():
        raise DatasetUnavailable(f"folder {root} has {', '.join(f'{s}/' for s in folders)} but not both train/ and "
                                 f"test/; fix: add the missing one, or put the class folders right in {root}")
    folders = folders or {"train": root}
    classes = {}
    for split, folder in folders.items():
        try:
            classes[split] = find_classes(folder)[0]
        except FileNotFoundError:
            raise DatasetUnavailable(f"folder {folder} has no class folders; fix: put the images in one subfolder "
                                     f"per class ({folder}/CLASS/IMAGE.png)") from None
    for split, names in classes.items():
        if names != classes["train"]:
            raise DatasetUnavailable(f"class folders differ between {folders['train']} ({', '.join(classes['train'])}) "
                                     f"and {folders[split]} ({', '.join(names)}); every split needs the same classes")
    names = classes["train"]
    if len(names) < 2:
        raise DatasetUnavailable(f"folder {folders['train']} has a single class folder ({names[0]}); "
                                 f"classification needs at least 2")
    index = {name: i for i, name in enumerate(names)}
    samples = {s: make_dataset(folder, index, extensions=IMG_EXTENSIONS, allow_empty=True)
               for s, folder in folders.items()}
    for split, items in samples.items():
        if not items:
            raise DatasetUnavailable(f"folder {folders[split]} has no images ({' '.join(IMG_EXTENSIONS)}) in its "
                                     f"class folders")
    counts = np.bincount([label for _, label in samples["train"]], minlength=len(names))
    if (counts == 0).any():
        empty = folders["train"] / names[int(np.flatnonzero(counts == 0)[0])]
        raise DatasetUnavailable(f"class folder {empty} has no images; every class needs training images")
    mode = _common_mode([path for items in samples.values() for path, _ in items])
    return {s: _decode(items, mode) for s, items in samples.items()}, len(names)


def _common_mode(paths: list[str]) -> str:
    """'RGB' if any image is in colour, else 'L'; DatasetUnavailable unless all images have one size."""
    first, size, colour = paths[0], None, False
    for path in paths:
        with _open_image(path) as image:
            size = size or image.size
            if image.size != size:
                raise DatasetUnavailable(f"image {path} is {image.size[0]}x{image.size[1]} pixels but {first} is "
                                         f"{size[0]}x{size[1]}; fix: resize the images to one size")
            colour = colour or image.getbands() not in _GRAY_BANDS
    return "RGB" if colour else "L"


def _decode(items: list[tuple[str, int]], mode: str) -> Arrays:
    pixels = []
    for path, _ in items:
        with _open_image(path) as image:
            pixels.append(np.asarray(image.convert(mode)))
    images = torch.from_numpy(np.stack(pixels))
    images = images.unsqueeze(1) if mode == "L" else images.permute(0, 3, 1, 2)
    return images.contiguous(), torch.tensor([label for _, label in items], dtype=torch.int64)


@contextmanager
def _open_image(path: str) -> Iterator[Image.Image]:
    """An open image; a file PIL cannot read or decode is a one-line DatasetUnavailable naming it."""
    try:
        with Image.open(path) as image:
            yield image
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        detail = " ".join(str(err).split())[:200]
        raise DatasetUnavailable(f"image {path} cannot be read ({type(err).__name__}: {detail}); fix: remove it or "
                                 f"save it again") from err
