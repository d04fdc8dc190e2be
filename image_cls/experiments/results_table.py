"""The results-table command behind scripts/mnist5k_table.py and scripts/fashion_table.py.

Runs the comparison of image_cls/comparison.py for several students and
seeds, then writes PREFIX.md (the tables and the settings) and PREFIX.json
(`settings`, every run's `rows`, the per-method `summary` and the `paired`
differences).  With --reuse, finished runs under --runs are read, not redone.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from .comparison import LS_GRID, ComparisonConfig, format_table, paired_differences, run_comparison, summarise
from .teacher_variants import TEACHER_VARIANTS


def main(argv: list[str] | None, dataset: str, defaults: dict, description: str) -> None:
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["mlp", "lenet"])
    parser.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1 (default: %(default)s)")
    parser.add_argument("--steps", nargs="+", default=defaults["steps"], metavar="MODEL=N",
                        help="student SGD steps per model, the same for every method (default: %(default)s)")
    parser.add_argument("--lr", nargs="+", default=defaults["lr"], metavar="MODEL=LR",
                        help="student SGD learning rate per model (default: %(default)s)")
    parser.add_argument("--teacher-rounds", type=int, default=defaults["teacher_rounds"], help="(default: %(default)s)")
    parser.add_argument("--teacher-lr", type=float, default=defaults["teacher_lr"], help="(default: %(default)s)")
    parser.add_argument("--structure", default="soft_target", help="teacher's loss family (default: %(default)s)")
    parser.add_argument("--teacher-form", default="gate", help="(default: %(default)s)")
    parser.add_argument("--dev-objective", default="cross_entropy",
                        help="the teacher's reward on the reward half of dev (default: %(default)s)")
    parser.add_argument("--teacher-base", choices=("tuned", "ce"), default="tuned",
                        help="tuned: the teacher starts at label_smoothing_tuned (default: %(default)s)")
    parser.add_argument("--teacher-variant", default="", choices=list(TEACHER_VARIANTS), metavar="NAME",
                        help="a teacher protocol of image_cls/teacher_variants.py, whose choices override the teacher "
                             "options above; its runs go to teacher-NAME and l2t_dlf-NAME beside the baselines' "
                             f"(choices: {', '.join(name for name in TEACHER_VARIANTS if name)}; default: none)")
    parser.add_argument("--runs", default=f"runs/{dataset}_table", help="every run's folder (default: %(default)s)")
    parser.add_argument("--out", default=f"results/{dataset}", help="prefix of the .md and .json outputs")
    parser.add_argument("--reuse", action="store_true", help="read runs that already finished under --runs")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    lrs, steps = (per_model(parser, items, kind, args.models) for items, kind in ((args.lr, float), (args.steps, int)))
    what, variant = TEACHER_VARIANTS[args.teacher_variant]
    rows = []
    for model in args.models:
        try:
            config = ComparisonConfig(**{
                "model": model, "dataset": dataset, "seeds": tuple(range(args.seeds)), "steps": steps[model],
                "lr": lrs[model], "teacher_rounds": args.teacher_rounds, "teacher_lr": args.teacher_lr,
                "teacher_base": args.teacher_base, "structure": args.structure, "teacher_form": args.teacher_form,
                "dev_objective": args.dev_objective, "device": args.device, "progress": False, "reuse": args.reuse,
                "variant": args.teacher_variant, **variant})
        except ValueError as err:
            parser.error(str(err))
        rows += run_comparison(config, args.runs)
    summary, paired = summarise(rows), paired_differences(rows)
    table = format_table(summary, paired)
    teacher = (f"teacher variant {args.teacher_variant} ({what})" if args.teacher_variant else
               f"{args.structure} loss family, {args.teacher_form} teacher starting at "
               f"{'label_smoothing_tuned' if args.teacher_base == 'tuned' else 'cross-entropy'}, trained for "
               f"{args.teacher_rounds} round(s) of the student's steps with exact 50-step hypergradients of the "
               f"{args.dev_objective} on the reward half of dev (Adam {args.teacher_lr})")
    settings = (f"{dataset}, SGD steps of 64 for every student {steps} (lr {lrs}, momentum 0.9, weight decay "
                f"5e-4); label smoothing 0.1 and tuned on mean dev error over {LS_GRID}; online label smoothing "
                f"alpha 0.5; L2T-DLF: {teacher}, then frozen to teach a fresh "
                f"student; kept only where it beats its base loss on the selection half of dev; seeds "
                f"0..{args.seeds - 1}; {time.perf_counter() - started:.0f} s for this invocation"
                f"{' (finished runs reused)' if args.reuse else ''}.")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(table + "\n\n" + settings + "\n")
    out.with_suffix(".json").write_text(json.dumps({"settings": settings, "rows": rows, "summary": summary,
                                                    "paired": paired}, indent=1))
    print(table)
    print()
    print(settings)


def per_model(parser: argparse.ArgumentParser, items: list[str], kind: type, models: list[str]) -> dict:
    """MODEL=VALUE items as a dict; every model in `models` must have one."""
    try:
        values = {model: kind(value) for model, value in (item.split("=") for item in items)}
    except ValueError:
        parser.error(f"expected MODEL=VALUE items, got {items}")
    missing = [model for model in models if model not in values]
    if missing:
        parser.error(f"no value for {missing} in {items}")
    return {model: values[model] for model in models}
