"""Ablation of the L2T-DLF teacher's design on Fashion-MNIST, judged on dev only.

Every variant (image_cls/teacher_variants.py) changes some choices of the
default teacher of scripts/fashion_table.py and trains a teacher (and a
taught student) for the given seeds; the baselines, the label-smoothing
epsilon chosen on dev and the default teacher's runs are read from the
table's --runs folder (run the table first).  The score is the taught student's error on the selection half of
dev, which no teacher is rewarded on, next to its base loss's student:
no test number is read here, so the table can choose the design.
Writes results/fashion_mnist_ablation.{md,json}; resumable (finished runs are reused).
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch

from image_cls.experiments.comparison import ComparisonConfig, run_comparison
from image_cls.experiments.teacher_variants import TEACHER_VARIANTS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", default=list(TEACHER_VARIANTS), choices=list(TEACHER_VARIANTS),
                        metavar="NAME", help="'' is the default teacher (default: all)")
    parser.add_argument("--teacher-seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--table-seeds", type=int, default=5, help="the table's seeds (they fix the tuned epsilon)")
    parser.add_argument("--model", default="mlp")
    parser.add_argument("--steps", type=int, default=6000)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--teacher-rounds", type=int, default=1)
    parser.add_argument("--teacher-lr", type=float, default=1e-2)
    parser.add_argument("--runs", default="runs/fashion_mnist_table")
    parser.add_argument("--out", default="results/fashion_mnist_ablation")
    args = parser.parse_args()
    results = []
    for name in args.variants:
        what, overrides = TEACHER_VARIANTS[name]
        config = ComparisonConfig(**{
            "model": args.model, "dataset": "fashion_mnist", "seeds": tuple(range(args.table_seeds)),
            "steps": args.steps, "lr": args.lr, "teacher_rounds": args.teacher_rounds,
            "teacher_lr": args.teacher_lr, "variant": name, "teacher_seeds": tuple(args.teacher_seeds),
            "progress": False, "reuse": True, **overrides})
        rows = [r for r in run_comparison(config, args.runs, report=lambda line: None) if r["method"] == "l2t_dlf"]
        diffs = [100 * (r["teacher_selection_dev_error"] - r["base_selection_dev_error"]) for r in rows]
        folder = "l2t_dlf" + (f"-{name}" if name else "")
        learned = [_learned_loss(Path(args.runs) / args.model / f"seed{r['seed']}" / folder) for r in rows]
        results.append({
            "variant": name or "default", "what": what, "seeds": [r["seed"] for r in rows],
            "reward_dev_error_mean": statistics.mean(100 * r["teacher_reward_dev_error"] for r in rows),
            "selection_dev_error_mean": statistics.mean(100 * r["teacher_selection_dev_error"] for r in rows),
            "base_selection_dev_error_mean": statistics.mean(100 * r["base_selection_dev_error"] for r in rows),
            "selection_minus_base": diffs, "beats_base": sum(d < 0 for d in diffs),
            "final_off_target_mass": [m for m, _ in learned], "final_loss_scale": [a for _, a in learned]})
        print(json.dumps(results[-1]), flush=True)
    lines = [f"Fashion-MNIST {args.model}, {args.steps} student steps (lr {args.lr}); teacher {args.teacher_rounds} "
             f"round(s) at Adam {args.teacher_lr} unless the variant says otherwise; seeds {args.teacher_seeds}. "
             "Errors in % on the dev halves; no test numbers.", "",
             "| variant | what changes | reward-dev | selection-dev | base's selection-dev | selection minus base "
             "per seed (points) | beats base | learned loss at the last step, per seed: off-target mass, loss scale |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        per_seed = ", ".join(f"{d:+.2f}" for d in r["selection_minus_base"])
        learned = "; ".join("n/a (W has negative entries)" if m is None else f"{m:.3f}, {a:.2f}"
                            for m, a in zip(r["final_off_target_mass"], r["final_loss_scale"]))
        lines.append(f"| {r['variant']} | {r['what']} | {r['reward_dev_error_mean']:.2f} | "
                     f"{r['selection_dev_error_mean']:.2f} | {r['base_selection_dev_error_mean']:.2f} | {per_seed} | "
                     f"{r['beats_base']}/{len(r['seeds'])} | {learned} |")
    out = Path(args.out)
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    out.with_suffix(".json").write_text(json.dumps(results, indent=1))
    print("\n".join(lines))


def _learned_loss(run: Path) -> tuple[float | None, float | None]:
    """The taught student's last loss: mean target mass off the gold class (label smoothing 0.1: 0.09) and mean
    column sum of W (the loss scale, 1 for CE and label smoothing); None where W has negative entries."""
    W = torch.load(run / "loss_trace.pt", weights_only=True)["snapshots"][-1]["W"].double()
    if (W < 0).any():
        return None, None
    scale = W.sum(0)
    return float((1 - W.diagonal() / scale).mean()), float(scale.mean())


if __name__ == "__main__":
    main()
