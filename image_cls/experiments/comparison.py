"""L2T-DLF against strong fixed and dynamic losses under the same student budget.

For one student model and several seeds, every method trains a student with
the same steps, batches (by seed) and SGD settings, through the real CLIs:

- ce, label_smoothing (epsilon 0.1);
- label_smoothing_tuned: the epsilon from `ls_grid` with the lowest mean dev
  error over the seeds (chosen on dev, never on test);
- online_label_smoothing (Zhang et al. 2021): dynamic, no teacher, no dev data;
- l2t_dlf: a teacher that starts exactly at label_smoothing_tuned (or CE), is
  trained on its own fresh students (never the evaluated one) and rewarded on
  the reward half of dev only, then teaches a fresh student.  If that student
  is not better than its base loss's student on the selection half of dev,
  the run keeps the base loss and says so (`kept_base`): selection happens on
  dev data the teacher never saw.

Each method's folder holds its logs and checkpoints; `reuse` reads the summary
of finished runs, so a long table can be completed over several sittings.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from fairseq_l2t.loss_structures import WELL_POSED_KINDS

from ..cli import train_student, train_teacher
from .cli_runs import run_cli
from .paired_stats import paired_summary

METHODS = ("ce", "label_smoothing", "label_smoothing_tuned", "online_label_smoothing", "l2t_dlf")
BASELINES = METHODS[:-1]
LS_GRID = (0.05, 0.1, 0.2, 0.3)
FIXED_EPSILON = 0.1
@dataclass
class ComparisonConfig:
    model: str = "mlp"
    dataset: str = "mnist5k"
    seeds: tuple[int, ...] = (0,)
    steps: int = 1500
    lr: float = 0.05
    batch_size: int = 64
    eval_every: int = 50
    ls_grid: tuple[float, ...] = LS_GRID
    teacher_rounds: int = 2
    episode_steps: int | None = 50  # None: one episode spans the whole student training
    teacher_lr: float = 1e-3
    teacher_base: str = "tuned"  # "tuned" (label_smoothing_tuned's epsilon) or "ce"
    structure: str = "soft_target"
    teacher_form: str = "gate"
    dev_objective: str = "cross_entropy"  # the smooth 0-1 error is gamed by flattening the student (ablation)
    extra_teacher_args: list[str] = field(default_factory=list)
    variant: str = ""  # names an ablation's teacher and taught-student folders (teacher-VARIANT, l2t_dlf-VARIANT)
    teacher_seeds: tuple[int, ...] | None = None  # the seeds that get a teacher (default: all)
    device: str = "cpu"
    progress: bool = True
    reuse: bool = False

    def __post_init__(self):
        if FIXED_EPSILON not in self.ls_grid:
            raise ValueError(f"the label-smoothing grid must hold the fixed baseline's {FIXED_EPSILON}")
        if self.teacher_base not in ("tuned", "ce"):
            raise ValueError(f"teacher_base must be 'tuned' or 'ce', got {self.teacher_base!r}")
        if self.teacher_base == "tuned" and self.structure not in WELL_POSED_KINDS:
            raise ValueError(f"a teacher based on label smoothing needs a well-posed structure {WELL_POSED_KINDS}")


def run_comparison(config: ComparisonConfig, out: str | Path,
                   report: Callable[[str], None] = print) -> list[dict]:
    """One row per (seed, method) with reward-dev, selection-dev, dev and test error of the final student."""
    runs = _Runs(config, Path(out) / config.model)
    grid = {eps: [runs.student(seed, _ls_dir(eps), ["--loss", "label_smoothing", "--label-smoothing", str(eps)])
                  for seed in config.seeds] for eps in config.ls_grid}
    tuned = min(config.ls_grid, key=lambda eps: (statistics.mean(r["dev_error"] for r in grid[eps]), eps))
    report(f"{config.model}: label smoothing epsilon chosen on dev: {tuned} (mean dev error "
           + ", ".join(f"{eps}: {100 * statistics.mean(r['dev_error'] for r in grid[eps]):.2f} %"
                       for eps in config.ls_grid) + ")")
    base_epsilon = tuned if config.teacher_base == "tuned" else 0.0
    rows = []
    suffix = f"-{config.variant}" if config.variant else ""
    for i, seed in enumerate(config.seeds):
        ce = runs.student(seed, "ce", ["--loss", "ce"])
        base = grid[base_epsilon][i] if base_epsilon else ce
        rows += [_row("ce", ce), _row("label_smoothing", grid[FIXED_EPSILON][i], epsilon=FIXED_EPSILON),
                 _row("label_smoothing_tuned", grid[tuned][i], epsilon=tuned),
                 _row("online_label_smoothing", runs.student(seed, "online_label_smoothing",
                                                             ["--loss", "online_label_smoothing"]))]
        if config.teacher_seeds is not None and seed not in config.teacher_seeds:
            continue
        teacher = runs.teacher(seed, base_epsilon, "teacher" + suffix)
        taught = runs.student(seed, "l2t_dlf" + suffix, ["--loss", "teacher", "--teacher", str(teacher)])
        kept_base = not taught["selection_dev_error"] < base["selection_dev_error"]
        report(f"{config.model} seed {seed}: taught student's selection-dev error "
               f"{100 * taught['selection_dev_error']:.2f} % vs its base loss's {100 * base['selection_dev_error']:.2f}"
               f" %: {'keeps the base loss' if kept_base else 'keeps the teacher'}")
        rows.append(_row("l2t_dlf", base if kept_base else taught, kept_base=kept_base, base_epsilon=base_epsilon,
                         teacher_reward_dev_error=taught["reward_dev_error"],
                         teacher_selection_dev_error=taught["selection_dev_error"],
                         base_selection_dev_error=base["selection_dev_error"], teacher_test_error=taught["test_error"]))
    return rows


class _Runs:
    """The CLI runs of one model's comparison, each in its own folder (seed/method)."""

    def __init__(self, config: ComparisonConfig, out: Path):
        self.config = config
        self.out = out
        self.common = ["--dataset", config.dataset, "--model", config.model, "--lr", str(config.lr),
                       "--batch-size", str(config.batch_size), "--device", config.device]
        if not config.progress:
            self.common.append("--no-progress")

    def student(self, seed: int, name: str, loss_args: list[str]) -> dict:
        argv = self.common + ["--steps", str(self.config.steps), "--eval-every", str(self.config.eval_every),
                              "--seed", str(seed), *loss_args]
        return run_cli(train_student.main, argv, self.out / f"seed{seed}" / name, self.config.reuse)

    def teacher(self, seed: int, base_epsilon: float, name: str) -> Path:
        config = self.config
        argv = self.common + ["--seed", str(seed), "--rounds", str(config.teacher_rounds), "--steps-per-round",
                              str(config.steps), "--episode-steps", str(config.episode_steps or config.steps),
                              "--teacher-lr", str(config.teacher_lr), "--dev-objective", config.dev_objective,
                              "--teacher-structure", config.structure, "--teacher-form", config.teacher_form,
                              "--reward-dev", "half",
                              *config.extra_teacher_args]
        if config.structure in WELL_POSED_KINDS:
            argv += ["--teacher-smoothing", str(base_epsilon)]
        folder = self.out / f"seed{seed}" / name
        run_cli(train_teacher.main, argv, folder, config.reuse)
        return folder / "teacher.pt"


def _ls_dir(epsilon: float) -> str:
    return f"label_smoothing_{epsilon:g}"


def _row(method: str, summary: dict, **extra) -> dict:
    return {"method": method, **{k: summary[k] for k in ("model", "dataset", "seed", "steps", "dev_error",
                                                         "reward_dev_error", "selection_dev_error", "test_error")},
            **extra}


def summarise(rows: list[dict]) -> list[dict]:
    """Mean and sample standard deviation of the errors (in %) per (model, method)."""
    table = []
    for model in dict.fromkeys(r["model"] for r in rows):
        for method in METHODS:
            picked = [r for r in rows if r["model"] == model and r["method"] == method]
            if not picked:
                continue
            entry = {"model": model, "method": method, "seeds": len(picked), **_error_summary(picked),
                     "dev_error_mean": statistics.mean(100 * r["dev_error"] for r in picked)}
            if "epsilon" in picked[0]:
                entry["epsilon"] = picked[0]["epsilon"]
            if method == "l2t_dlf":
                entry["kept_base"] = sum(r["kept_base"] for r in picked)
                # the teacher's own taught students, whatever the guard kept: what the teacher did, seed by seed
                entry["taught"] = _error_summary(picked, prefix="teacher_")
            table.append(entry)
    return table


def _error_summary(picked: list[dict], prefix: str = "") -> dict:
    """Test error mean, sample std and per seed, and the dev halves' mean errors (in %), of rows' `prefix`-keys."""
    test = [100 * r[f"{prefix}test_error"] for r in picked]
    return {"test_error_mean": statistics.mean(test),
            "test_error_std": statistics.stdev(test) if len(test) > 1 else 0.0,
            "reward_dev_error_mean": statistics.mean(100 * r[f"{prefix}reward_dev_error"] for r in picked),
            "selection_dev_error_mean": statistics.mean(100 * r[f"{prefix}selection_dev_error"] for r in picked),
            "test_errors": test}


def paired_differences(rows: list[dict]) -> list[dict]:
    """Per model and baseline: L2T-DLF's test error minus the baseline's, seed by seed (percentage points),
    with its mean, a 95 % t interval (None for one seed) and how many seeds L2T-DLF won (strictly lower error)."""
    out = []
    for model in dict.fromkeys(r["model"] for r in rows):
        ours = {r["seed"]: r for r in rows if r["model"] == model and r["method"] == "l2t_dlf"}
        for baseline in BASELINES:
            theirs = {r["seed"]: r for r in rows if r["model"] == model and r["method"] == baseline}
            seeds = sorted(set(ours) & set(theirs))
            if not seeds:
                continue
            diffs = [100 * (ours[s]["test_error"] - theirs[s]["test_error"]) for s in seeds]
            out.append({"model": model, "baseline": baseline, **paired_summary(diffs)})
    return out


def format_table(summary: list[dict], paired: list[dict]) -> str:
    """Two Markdown tables: the errors per method, and L2T-DLF's paired test-error differences."""
    lines = ["| student | method | seeds | test error % (mean ± std) | reward-dev % | selection-dev % | dev % | "
             "per-seed test error % |", "|---|---|---|---|---|---|---|---|"]
    for s in summary:
        name = s["method"] + (f" (eps {s['epsilon']:g})" if "epsilon" in s else "")
        if s["method"] == "l2t_dlf":
            name += f" (kept base in {s['kept_base']}/{s['seeds']})"
        seeds = ", ".join(f"{e:.2f}" for e in s["test_errors"])
        lines.append(f"| {s['model']} | {name} | {s['seeds']} | {s['test_error_mean']:.2f} ± "
                     f"{s['test_error_std']:.2f} | {s['reward_dev_error_mean']:.2f} | "
                     f"{s['selection_dev_error_mean']:.2f} | {s['dev_error_mean']:.2f} | {seeds} |")
        if "taught" in s:
            t = s["taught"]
            lines.append(f"| {s['model']} | l2t_dlf's taught students (no guard) | {s['seeds']} | "
                         f"{t['test_error_mean']:.2f} ± {t['test_error_std']:.2f} | "
                         f"{t['reward_dev_error_mean']:.2f} | {t['selection_dev_error_mean']:.2f} | | "
                         + ", ".join(f"{e:.2f}" for e in t["test_errors"]) + " |")
    lines += ["", "| student | L2T-DLF minus | seeds | mean difference (points) | 95 % interval | L2T-DLF wins |",
              "|---|---|---|---|---|---|"]
    for p in paired:
        interval = "n/a (one seed)" if p["ci95"] is None else "[{:+.2f}, {:+.2f}]".format(*p["ci95"])
        lines.append(f"| {p['model']} | {p['baseline']} | {p['seeds']} | {p['mean_difference']:+.2f} | "
                     f"{interval} | {p['wins']}/{p['seeds']}"
                     + (f" ({p['ties']} tied)" if p["ties"] else "") + " |")
    return "\n".join(lines)
