"""The noisy-label results table behind scripts/noisy_table.py: every (noise, model) cell of the comparison of
image_cls/experiments/noisy_comparison.py for several seeds, then PREFIX.md (the tables and the settings),
PREFIX.json (`settings`, every run's `rows`, the per-cell `summary`, the `paired` differences, guarded and
unguarded), PREFIX_ce_curves.png (cross-entropy's dev and test error over training: the memorisation) and
PREFIX_teacher.png (what the teacher handed out, beside the error curves).  With --reuse, finished runs under
--runs are read, not redone, so the table can be completed over several sittings and by several processes
(give each its own --noises or --models, then run once more with all of them to write the outputs).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from ..cli.common import positive_int
from ..run_files.plots import plot_learning_curves, plot_noisy_teacher
from .noisy_comparison import (GCE_GRID, LS_GRID, NoisyConfig, format_table, format_teacher_rows,
                               paired_differences, run_noisy_comparison, summarise, traced_student)
from .noisy_variants import NOISY_VARIANTS
from .results_table import per_model

NOISES = ("symmetric:0.4", "asymmetric:0.4", "none")
DATASET_NAMES = {"fashion_mnist": "Fashion-MNIST: 50k training images",
                  "mnist5k": "MNIST-5k: 3,000 training digits"}  # the built-in datasets the table runs on


def main(argv: list[str] | None = None, description: str = __doc__) -> None:
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=list(DATASET_NAMES), default="fashion_mnist",
                        help="built-in dataset with a documented asymmetric mapping (default: %(default)s)")
    parser.add_argument("--models", nargs="+", default=["mlp", "lenet"])
    parser.add_argument("--noises", nargs="+", default=list(NOISES), metavar="NOISE",
                        help="label-noise models, as --label-noise takes them (default: %(default)s)")
    parser.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1 (default: %(default)s)")
    parser.add_argument("--steps", nargs="+", default=["mlp=20000", "lenet=8000"], metavar="MODEL=N",
                        help="student SGD steps per model, the same for every method (default: %(default)s)")
    parser.add_argument("--lr", nargs="+", default=["mlp=0.01", "lenet=0.01"], metavar="MODEL=LR",
                        help="student SGD learning rate per model (default: %(default)s)")
    parser.add_argument("--eval-every", type=positive_int, default=100,
                        help="dev evaluation (checkpoint selection) every N student steps (default: %(default)s)")
    parser.add_argument("--episode-steps", type=positive_int, default=500,
                        help="the teacher's episode length in student steps; divides --steps (default: %(default)s)")
    parser.add_argument("--dev-per-class", type=positive_int, default=100,
                        help="trusted dev images per class (default: %(default)s)")
    parser.add_argument("--ls-grid", nargs="+", type=float, default=list(LS_GRID), metavar="EPS",
                        help="label smoothing's epsilons, tuned on the selection half (default: %(default)s)")
    parser.add_argument("--gce-grid", nargs="+", type=float, default=list(GCE_GRID), metavar="Q",
                        help="the generalised cross-entropy's q values, tuned likewise (default: %(default)s)")
    parser.add_argument("--teacher-variant", default="", choices=list(NOISY_VARIANTS), metavar="NAME",
                        help="a teacher protocol of image_cls/experiments/noisy_variants.py (choices: "
                             f"{', '.join(name for name in NOISY_VARIANTS if name)}; default: the default one)")
    parser.add_argument("--runs", default="runs/noisy_table", help="every run's folder (default: %(default)s)")
    parser.add_argument("--out", default="results/noisy_fashion", help="prefix of the outputs (default: %(default)s)")
    parser.add_argument("--reuse", action="store_true", help="read runs that already finished under --runs")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (for logs)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    lrs, steps = (per_model(parser, items, kind, args.models) for items, kind in ((args.lr, float), (args.steps, int)))
    what, variant = NOISY_VARIANTS[args.teacher_variant]
    rows, configs = [], []
    for noise in args.noises:
        for model in args.models:
            try:
                config = NoisyConfig(**{"model": model, "noise": noise, "seeds": tuple(range(args.seeds)),
                                        "steps": steps[model], "lr": lrs[model], "device": args.device,
                                        "dataset": args.dataset, "dev_per_class": args.dev_per_class,
                                        "eval_every": args.eval_every, "episode_steps": args.episode_steps,
                                        "ls_grid": tuple(args.ls_grid), "gce_grid": tuple(args.gce_grid),
                                        "progress": not args.no_progress, "reuse": args.reuse,
                                        "variant": args.teacher_variant, **variant})
            except ValueError as err:
                parser.error(str(err))
            configs.append(config)
            rows += run_noisy_comparison(config, args.runs)
    summary, paired = summarise(rows), paired_differences(rows)
    unguarded = paired_differences(rows, key="taught_test_error")
    table = format_table(summary, paired, unguarded) + "\n\n" + format_teacher_rows(rows)
    first = configs[0]
    settings = (f"{DATASET_NAMES[args.dataset]} with the noisy labels of each row (seeded by the seed), a "
                f"trusted dev set of {first.dev_per_class} images per class (its reward half: what methods learn "
                f"from; its selection half: every run's checkpoint, every tuned value and the L2T-DLF guard), the "
                f"official clean 10k test set (scored at the end only). Students: SGD of 64, momentum 0.9, weight "
                f"decay 5e-4, steps {steps}, lr {lrs}, dev evaluated every {first.eval_every} steps. Label "
                f"smoothing tuned over {first.ls_grid}, the generalised cross-entropy over q in {first.gce_grid}; "
                f"forward_glc estimates the noise from the seed's ce student; l2rw looks ahead on reward-half "
                f"batches of 64. L2T-DLF: teacher protocol {args.teacher_variant or 'default'} ({what}); the guard "
                f"keeps the base loss unless a one-sided exact McNemar test on the selection half gives p < "
                f"{first.guard_alpha}. Seeds 0..{args.seeds - 1}; {time.perf_counter() - started:.0f} s for this "
                f"invocation{' (finished runs reused)' if args.reuse else ''}.")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    pictures = _pictures(configs, Path(args.runs), out)
    out.with_suffix(".md").write_text(table + "\n\n" + settings + "\n\n" + "\n".join(f"![{name}]({path.name})"
                                                                                      for name, path in pictures)
                                      + "\n")
    out.with_suffix(".json").write_text(json.dumps({"settings": settings, "rows": rows, "summary": summary,
                                                    "paired": paired, "paired_unguarded": unguarded}, indent=1))
    print(table)
    print()
    print(settings)


def _pictures(configs: list[NoisyConfig], runs: Path, out: Path) -> list[tuple[str, Path]]:
    """The memorisation curves of cross-entropy and the teacher's picture, from seed 0 of the first model."""
    model = configs[0].model
    cells = {c.noise_name: runs / c.noise_name.replace(":", "_") / model / "seed0" for c in configs if c.model == model}
    curves = plot_learning_curves({f"ce, {noise}": folder / "ce" for noise, folder in cells.items()},
                                  out.parent / f"{out.name}_ce_curves.png")
    pictures = [("cross-entropy's dev and test error over training", curves)]
    suffix = f"-{configs[0].variant}" if configs[0].variant else ""
    for noise, folder in cells.items():
        fresh = folder / f"l2t_dlf{suffix}"
        taught = traced_student(folder / f"teacher{suffix}" / "student" if configs[0].student == "kept" else fresh,
                                fresh)
        if noise.startswith("asymmetric") and (taught / "loss_trace.pt").is_file():
            picture = plot_noisy_teacher(folder / "ce", taught, out.parent / f"{out.name}_teacher.png")
            pictures.append((f"what the teacher handed out ({noise}, {model}, seed 0)", picture))
    return pictures
