"""`l2t-image-plot`: PNG plots of finished runs: learning curves of several runs, and the loss matrix W that the
teacher handed out at several stages of a student's training."""
from __future__ import annotations

import argparse

from ..run_files.plots import plot_learning_curves, plot_loss_matrices


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="l2t-image-plot", description=__doc__)
    sub = parser.add_subparsers(dest="what", required=True)
    curves = sub.add_parser("curves", help="learning curves of runs written by l2t-image-train-student")
    curves.add_argument("runs", nargs="+", metavar="LABEL=DIR", help="e.g. ce=runs/ce l2t=runs/l2t")
    curves.add_argument("--out", required=True, help="PNG file")
    loss = sub.add_parser("loss", help="the teacher's W at several stages (OUT/loss_trace.pt of a taught run)")
    loss.add_argument("trace", help="loss_trace.pt")
    loss.add_argument("--stages", type=int, default=4)
    loss.add_argument("--out", required=True, help="PNG file")
    args = parser.parse_args(argv)
    if args.what == "curves":
        bad = [r for r in args.runs if "=" not in r]
        if bad:
            parser.error(f"runs must look like LABEL=DIR, got {bad[0]!r}")
        print(plot_learning_curves(dict(r.split("=", 1) for r in args.runs), args.out))
    else:
        print(plot_loss_matrices(args.trace, args.out, args.stages))


if __name__ == "__main__":
    main()
