"""Cross-entropy vs label smoothing vs L2T-DLF under the same student budget.

For every seed: a CE student, a label-smoothing student, a teacher trained on
its own fresh students (never the evaluated one), and a fresh student taught by
that teacher with the same steps, batches and SGD settings as the CE student.
All runs go through the real CLIs, so their folders hold logs and checkpoints.
"""
from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from . import train_student, train_teacher

METHODS = ("ce", "label_smoothing", "l2t_dlf")


@dataclass
class ComparisonConfig:
    model: str = "mlp"
    dataset: str = "mnist5k"
    seeds: tuple[int, ...] = (0,)
    steps: int = 1500
    lr: float = 0.05
    batch_size: int = 64
    eval_every: int = 50
    teacher_rounds: int = 2
    episode_steps: int = 50
    teacher_lr: float = 1e-3
    dev_objective: str = "smooth_error"
    extra_teacher_args: list[str] = field(default_factory=list)
    device: str = "cpu"
    progress: bool = True
    reuse: bool = False


def run_comparison(config: ComparisonConfig, out: str | Path) -> list[dict]:
    """One row per (seed, method) with dev and test error of the final student."""
    out = Path(out)
    common = ["--dataset", config.dataset, "--model", config.model, "--lr", str(config.lr),
              "--batch-size", str(config.batch_size), "--device", config.device]
    if not config.progress:
        common.append("--no-progress")
    rows = []
    for seed in config.seeds:
        student_args = common + ["--steps", str(config.steps), "--eval-every", str(config.eval_every),
                                 "--seed", str(seed)]
        run_dir = out / config.model / f"seed{seed}"
        for method, loss_args in (("ce", ["--loss", "ce"]), ("label_smoothing", ["--loss", "label_smoothing"])):
            result = _run(train_student.main, student_args + loss_args, run_dir / method, config.reuse)
            rows.append({"method": method, **result})
        _run(train_teacher.main, common + ["--seed", str(seed), "--rounds", str(config.teacher_rounds),
                                           "--steps-per-round", str(config.steps), "--episode-steps",
                                           str(config.episode_steps), "--teacher-lr", str(config.teacher_lr),
                                           "--dev-objective", config.dev_objective, *config.extra_teacher_args],
             run_dir / "teacher", config.reuse)
        result = _run(train_student.main, student_args + ["--loss", "teacher", "--teacher",
                                                          str(run_dir / "teacher" / "teacher.pt")],
                      run_dir / "l2t_dlf", config.reuse)
        rows.append({"method": "l2t_dlf", **result})
    return rows


def _run(main: Callable[[list[str]], dict], argv: list[str], out: Path, reuse: bool) -> dict:
    """Run a CLI into `out`, or with reuse, read the summary of a finished run there."""
    if reuse and (out / "summary.json").is_file():
        return json.loads((out / "summary.json").read_text())
    return main(argv + ["--out", str(out)])


def summarise(rows: list[dict]) -> list[dict]:
    """Mean and sample standard deviation of test/dev error per (model, method)."""
    table = []
    for model in dict.fromkeys(r["model"] for r in rows):
        for method in METHODS:
            picked = [r for r in rows if r["model"] == model and r["method"] == method]
            if not picked:
                continue
            test = [100 * r["test_error"] for r in picked]
            dev = [100 * r["dev_error"] for r in picked]
            table.append({"model": model, "method": method, "seeds": len(picked),
                          "test_error_mean": statistics.mean(test),
                          "test_error_std": statistics.stdev(test) if len(test) > 1 else 0.0,
                          "dev_error_mean": statistics.mean(dev), "test_errors": test})
    return table


def format_table(summary: list[dict]) -> str:
    """A Markdown table; the last column says whether L2T-DLF beat CE."""
    lines = ["| student | loss | seeds | test error % (mean ± std) | dev error % | per-seed test error % |",
             "|---|---|---|---|---|---|"]
    ce = {s["model"]: s["test_error_mean"] for s in summary if s["method"] == "ce"}
    for s in summary:
        verdict = ""
        if s["method"] == "l2t_dlf" and s["model"] in ce:
            verdict = " (below CE)" if s["test_error_mean"] < ce[s["model"]] else " (NOT below CE)"
        seeds = ", ".join(f"{e:.1f}" for e in s["test_errors"])
        lines.append(f"| {s['model']} | {s['method']} | {s['seeds']} | {s['test_error_mean']:.2f} ± "
                     f"{s['test_error_std']:.2f}{verdict} | {s['dev_error_mean']:.2f} | {seeds} |")
    return "\n".join(lines)
