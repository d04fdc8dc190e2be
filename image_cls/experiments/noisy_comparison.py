"""L2T-DLF against the noisy-label baselines: the same noisy labels, trusted dev set, budget, seeds and selection.

For one noise model, one student model and several seeds, every method trains
a student through the real CLIs with the same steps, batches (by seed), SGD
settings and training labels (the noise is drawn from the seed), and every
one is scored like a practitioner's model: its checkpoint with the lowest
error on the selection half of the trusted dev set (`selected`), beside its
final one.  A method learns from the trusted set only through its reward half:

- ce, online_label_smoothing (Zhang et al. 2021);
- label_smoothing_tuned, gce_tuned (Zhang & Sabuncu 2018): epsilon of
  `ls_grid`, q of `gce_grid`, each the one whose selected checkpoints have the
  lowest mean selection-half error over the seeds;
- forward_glc (Hendrycks et al. 2018): the noise estimated from this seed's ce
  student (its selected checkpoint) on the reward half, then forward correction;
- l2rw (Ren et al. 2018): example weights from a lookahead on reward-half batches;
- l2t_dlf: a teacher of the `corrected` family that starts exactly at
  forward_glc's loss (or at CE, or, `teacher_base` "best", at whichever of the
  family's member baselines ce, label_smoothing_tuned, gce_tuned and forward_glc
  has this seed's lowest selection-half error), trained along one student of
  its own on this seed's noisy labels (another init and batch order than the
  baselines'), rewarded on the reward half.  L2T-DLF's student is that one
  (`student` "kept": taught while the teacher learned, its checkpoint chosen on
  the selection half at episode ends) or, `student` "fresh", a fresh student
  taught by the frozen teacher, which is run either way and reported beside the
  kept one.  The guard keeps the base loss unless L2T-DLF's student is more
  accurate on the selection half by an exact one-sided paired test (McNemar on
  the same images) at `guard_alpha`; the unguarded students are reported too,
  and what the teacher handed out (its mean q, eps, corrected mass and loss
  scale).

Runs live in OUT/NOISE/MODEL/seedS/METHOD; `reuse` reads finished runs.
"""
from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from ..cli import train_student, train_teacher
from ..cli.common import load_data
from ..data.batches import eval_batches
from ..data.label_noise import parse_label_noise
from ..data.splits import dev_halves
from ..run_files.checkpoints import load_checkpoint
from ..run_files.corrected_trace import handed_out
from ..training.models import build_model
from .cli_runs import run_cli
from .paired_stats import mcnemar_one_sided, paired_summary

METHODS = ("ce", "label_smoothing_tuned", "online_label_smoothing", "gce_tuned", "forward_glc", "l2rw", "l2t_dlf")
BASELINES = METHODS[:-1]
LS_GRID = (0.1, 0.3, 0.5)
GCE_GRID = (0.3, 0.5, 0.7)
TEACHER_BASES = ("glc", "ce", "best")
MEMBER_BASELINES = ("ce", "label_smoothing_tuned", "gce_tuned", "forward_glc")  # exact members of the family


@dataclass
class NoisyConfig:
    model: str = "mlp"
    noise: str = "asymmetric:0.4"
    seeds: tuple[int, ...] = (0,)
    steps: int = 20000
    lr: float = 0.01
    batch_size: int = 64
    eval_every: int = 100
    dataset: str = "fashion_mnist"
    dev_per_class: int = 100
    ls_grid: tuple[float, ...] = LS_GRID
    gce_grid: tuple[float, ...] = GCE_GRID
    teacher_base: str = "glc"
    teacher_rounds: int = 1
    episode_steps: int = 500
    snapshots: int = 64  # of the checkpointed engine: 2 recomputations per step for 500-step episodes
    teacher_lr: float = 1e-2
    dev_objective: str = "calibrated_cross_entropy"  # chosen on seed 0's selection half (noisy_variants.py)
    teacher_args: tuple[str, ...] = ()  # further l2t-image-train-teacher options (a protocol's own)
    variant: str = ""  # names a protocol's teacher and taught-student folders (teacher-VARIANT, l2t_dlf-VARIANT)
    teacher_seeds: tuple[int, ...] | None = None  # the seeds that get a teacher (default: all)
    # l2t_dlf's student: "kept" (the teacher run's own, taught while the teacher learned: l2t-image-train-teacher
    # --keep-student; chosen on the selection half of seeds 0-4, noisy_variants.py) or "fresh" (taught from
    # scratch by the finished teacher, the paper's protocol)
    student: str = "kept"
    guard_alpha: float = 0.05
    curve_seeds: tuple[int, ...] = (0,)  # seeds whose ce and taught students log a test curve (the figure)
    device: str = "cpu"
    progress: bool = False
    reuse: bool = False
    methods: tuple[str, ...] = field(default=METHODS)

    def __post_init__(self):
        parse_label_noise(self.noise)  # ValueError for a bad noise model
        if self.student not in ("fresh", "kept"):
            raise ValueError(f"student must be fresh or kept, got {self.student!r}")
        if self.teacher_base not in TEACHER_BASES:
            raise ValueError(f"teacher_base must be one of {TEACHER_BASES}, got {self.teacher_base!r}")
        if self.steps % self.episode_steps:
            raise ValueError(f"the student's {self.steps} steps must be a multiple of the {self.episode_steps}-step "
                             f"episodes")
        unknown = set(self.methods) - set(METHODS)
        if unknown:
            raise ValueError(f"unknown methods {sorted(unknown)}; choose from {METHODS}")

    @property
    def noise_name(self) -> str:
        return parse_label_noise(self.noise).name


def run_noisy_comparison(config: NoisyConfig, out: str | Path, report: Callable[[str], None] = print) -> list[dict]:
    """One row per (seed, method): the selected and final checkpoints' errors, and what the method chose."""
    runs = _Runs(config, Path(out))
    wanted = set(config.methods)
    best_base = "l2t_dlf" in wanted and config.teacher_base == "best"
    rows: list[dict] = []
    tuned: dict[str, dict[int, tuple[dict, str, list[str]]]] = {}  # method: seed: (summary, folder, teacher start)
    for method, grid, flag, key in (("label_smoothing_tuned", config.ls_grid, "--label-smoothing", "epsilon"),
                                    ("gce_tuned", config.gce_grid, "--gce-q", "q")):
        if method not in wanted and not best_base:
            continue
        loss = "label_smoothing" if key == "epsilon" else "gce"
        results = {value: [runs.student(seed, f"{loss}_{value:g}", ["--loss", loss, flag, str(value)])
                           for seed in config.seeds] for value in grid}
        best = min(grid, key=lambda v: (statistics.mean(r["selected"]["selection_dev_error"] for r in results[v]), v))
        report(f"{config.noise_name} {config.model}: {loss} {key} chosen on the selection half: {best:g} ("
               + ", ".join(f"{v:g}: {100 * statistics.mean(r['selected']['selection_dev_error'] for r in results[v]):.2f}"
                           " %" for v in grid) + ")")
        start = "--teacher-smoothing" if key == "epsilon" else "--teacher-robustness"
        tuned[method] = {r["seed"]: (r, f"{loss}_{best:g}", [start, str(best)]) for r in results[best]}
        if method in wanted:
            rows += [_row(config, method, r, **{key: best}) for r in results[best]]
    for seed in config.seeds:
        ce = runs.student(seed, "ce", ["--loss", "ce"], curve=True)
        if "ce" in wanted:
            rows.append(_row(config, "ce", ce))
        if "online_label_smoothing" in wanted:
            rows.append(_row(config, "online_label_smoothing",
                             runs.student(seed, "online_label_smoothing", ["--loss", "online_label_smoothing"])))
        glc = None
        if wanted & {"forward_glc", "l2t_dlf"}:
            glc = runs.student(seed, "forward_glc", ["--loss", "glc", "--glc-model",
                                                     str(runs.folder(seed, "ce") / "checkpoint_selected.pt")])
            if "forward_glc" in wanted:
                rows.append(_row(config, "forward_glc", glc))
        if "l2rw" in wanted:
            rows.append(_row(config, "l2rw", runs.student(seed, "l2rw", ["--loss", "l2rw"])))
        if "l2t_dlf" in wanted and (config.teacher_seeds is None or seed in config.teacher_seeds):
            transition = ["--teacher-transition", str(runs.folder(seed, "forward_glc") / "transition.json")]
            members = {"ce": (ce, "ce", []), **{m: tuned[m][seed] for m in tuned},
                       "forward_glc": (glc, "forward_glc", transition)}
            base_name = {"glc": "forward_glc", "ce": "ce"}.get(config.teacher_base) or min(
                MEMBER_BASELINES, key=lambda m: members[m][0]["selected"]["selection_dev_error"])
            rows.append(_taught_row(config, runs, seed, base_name, *members[base_name], report))
    return rows


def _taught_row(config: NoisyConfig, runs: "_Runs", seed: int, base_name: str, base: dict, base_folder: str,
                base_args: list[str], report: Callable[[str], None]) -> dict:
    """The l2t_dlf row of one seed: the taught student, or its base loss's where the guard keeps the base (the
    baseline `base_name`, run in `base_folder`, where the teacher starts with `base_args`)."""
    suffix = f"-{config.variant}" if config.variant else ""
    keep = config.student == "kept"
    teacher = runs.teacher(seed, "teacher" + suffix, base_args + ["--keep-student"] * keep)
    fresh = runs.student(seed, "l2t_dlf" + suffix, ["--loss", "teacher", "--teacher", str(teacher)], curve=True)
    taught_folder = teacher.parent / "student" if keep else runs.folder(seed, "l2t_dlf" + suffix)
    taught = json.loads((taught_folder / "summary.json").read_text()) if keep else fresh
    ours, theirs = selection_correct(taught_folder), selection_correct(runs.folder(seed, base_folder))
    ours_only, theirs_only = int((ours & ~theirs).sum()), int((theirs & ~ours).sum())
    p_value = mcnemar_one_sided(ours_only, theirs_only)
    kept_base = not p_value < config.guard_alpha
    report(f"{config.noise_name} {config.model} seed {seed}: {config.student} taught student right on {ours_only} "
           f"selection-half images its base ({base_name}) gets wrong, wrong on {theirs_only} it gets right "
           f"(one-sided McNemar p = {p_value:.3f}): {'keeps the base loss' if kept_base else 'keeps the teacher'}")
    kept = base if kept_base else taught
    return _row(config, "l2t_dlf", kept, kept_base=kept_base, base=base_name, guard_p_value=p_value,
                taught_only_right=ours_only, base_only_right=theirs_only,
                **{f"taught_{k}": v for k, v in _errors(taught).items()}, student=config.student,
                **({f"fresh_{k}": v for k, v in _errors(fresh).items()} if keep else {}),
                **_handed_out(taught_folder, runs.folder(seed, "l2t_dlf" + suffix)))


def traced_student(taught: Path, fresh: Path) -> Path:
    """The reported student's folder, or, for a kept student of a teacher run that did not trace it (before
    --keep-student wrote loss_trace.pt), the fresh student's of the same finished teacher: whose losses to show."""
    return taught if (taught / "loss_trace.pt").is_file() else fresh


def _handed_out(taught: Path, fresh: Path) -> dict:
    """What the teacher handed out to the student traced_student picks, and which one that is."""
    traced = traced_student(taught, fresh)
    return {"handed_out": handed_out(traced), "handed_out_to": "fresh" if traced == fresh else "kept"}


class _Runs:
    """The CLI runs of one (noise, model) comparison, each in its own folder (seed/method)."""

    def __init__(self, config: NoisyConfig, out: Path):
        self.config = config
        self.out = out / config.noise_name.replace(":", "_") / config.model
        self.common = ["--dataset", config.dataset, "--label-noise", config.noise, "--dev-per-class",
                       str(config.dev_per_class), "--model", config.model, "--lr", str(config.lr), "--batch-size",
                       str(config.batch_size), "--device", config.device, "--no-tensorboard"]
        if not config.progress:
            self.common.append("--no-progress")

    def folder(self, seed: int, name: str) -> Path:
        return self.out / f"seed{seed}" / name

    def student(self, seed: int, name: str, loss_args: list[str], curve: bool = False) -> dict:
        argv = self.common + ["--steps", str(self.config.steps), "--eval-every", str(self.config.eval_every),
                              "--seed", str(seed), *loss_args]
        if curve and seed in self.config.curve_seeds:
            argv.append("--test-curve")
        return run_cli(train_student.main, argv, self.folder(seed, name), self.config.reuse)

    def teacher(self, seed: int, name: str, base_args: list[str]) -> Path:
        config = self.config
        argv = self.common + ["--seed", str(seed), "--rounds", str(config.teacher_rounds), "--steps-per-round",
                              str(config.steps), "--episode-steps", str(config.episode_steps), "--engine",
                              "checkpointed", "--snapshots", str(config.snapshots), "--teacher-lr", str(config.teacher_lr), "--dev-objective",
                              config.dev_objective, "--teacher-structure", "corrected", "--reward-dev", "half",
                              *config.teacher_args, *base_args]
        folder = self.folder(seed, name)
        run_cli(train_teacher.main, argv, folder, config.reuse)
        return folder / "teacher.pt"


def selection_correct(folder: Path) -> torch.Tensor:
    """Which images of the selection half the run's dev-selected checkpoint classifies right (bool, in order)."""
    saved = load_checkpoint(folder / "checkpoint_selected.pt", "student")
    splits = load_data(saved["args"])
    selection = dev_halves(splits.dev, saved["seed"])[1]
    model = build_model(saved["model"], splits.num_classes, splits.in_channels, splits.image_size)
    model.load_state_dict(saved["model_state"])
    model.eval()
    with torch.no_grad():
        return torch.cat([model(x).argmax(-1).eq(y) for x, y in
                          eval_batches(selection, min(500, len(selection)), splits.mean, splits.std)])


def _errors(summary: dict) -> dict:
    """A run's errors: the dev-selected checkpoint's (the table's) and the final one's."""
    chosen = summary["selected"]
    return {"test_error": chosen["test_error"], "selection_dev_error": chosen["selection_dev_error"],
            "reward_dev_error": chosen["reward_dev_error"], "selected_step": chosen["step"],
            "final_test_error": summary["test_error"], "final_selection_dev_error": summary["selection_dev_error"]}


def _row(config: NoisyConfig, method: str, summary: dict, **extra) -> dict:
    return {"noise": config.noise_name, "model": config.model, "method": method, "seed": summary["seed"],
            **_errors(summary), "noisy_share": summary["label_noise"]["noisy_share"] if summary["label_noise"] else 0.0,
            **extra}


def summarise(rows: list[dict]) -> list[dict]:
    """Per (noise, model, method): the mean and sample std of the dev-selected test error and of the final one (%)."""
    table = []
    for noise, model in dict.fromkeys((r["noise"], r["model"]) for r in rows):
        for method in METHODS:
            picked = [r for r in rows if (r["noise"], r["model"], r["method"]) == (noise, model, method)]
            if not picked:
                continue
            entry = {"noise": noise, "model": model, "method": method, "seeds": len(picked),
                     **_means(picked, "test_error"), **_means(picked, "final_test_error"),
                     "selection_dev_error_mean": statistics.mean(100 * r["selection_dev_error"] for r in picked),
                     "test_errors": [100 * r["test_error"] for r in picked]}
            for key in ("epsilon", "q"):
                if key in picked[0]:
                    entry[key] = picked[0][key]
            if method == "l2t_dlf":
                entry["kept_base"] = sum(r["kept_base"] for r in picked)
                entry["taught"] = {**_means(picked, "taught_test_error"), **_means(picked, "taught_final_test_error"),
                                   "test_errors": [100 * r["taught_test_error"] for r in picked]}
            table.append(entry)
    return table


def _means(picked: list[dict], key: str) -> dict:
    values = [100 * r[key] for r in picked]
    return {f"{key}_mean": statistics.mean(values), f"{key}_std": statistics.stdev(values) if len(values) > 1 else 0.0}


def paired_differences(rows: list[dict], ours: str = "l2t_dlf", key: str = "test_error") -> list[dict]:
    """Per (noise, model) and baseline: `ours` minus the baseline, seed by seed (points), with a 95 % t interval and
    the seeds `ours` wins; `key` is the error compared (the dev-selected test error; taught_test_error: unguarded)."""
    out = []
    for noise, model in dict.fromkeys((r["noise"], r["model"]) for r in rows):
        cell = [r for r in rows if (r["noise"], r["model"]) == (noise, model)]
        mine = {r["seed"]: r for r in cell if r["method"] == ours}
        for baseline in BASELINES:
            theirs = {r["seed"]: r for r in cell if r["method"] == baseline}
            seeds = sorted(set(mine) & set(theirs))
            if seeds:
                diffs = [100 * (mine[s][key] - theirs[s]["test_error"]) for s in seeds]
                out.append({"noise": noise, "model": model, "baseline": baseline, **paired_summary(diffs)})
    return out


def format_table(summary: list[dict], paired: list[dict], unguarded: list[dict]) -> str:
    """Markdown: errors per method (dev-selected and final), and L2T-DLF's paired differences, guarded and not."""
    lines = ["| noise | student | method | seeds | test error %, dev-selected (mean ± std) | final test error % | "
             "selection-dev % | per-seed test error % |", "|---|---|---|---|---|---|---|---|"]
    for s in summary:
        name = s["method"] + "".join(f" ({key} {s[key]:g})" for key in ("epsilon", "q") if key in s)
        if s["method"] == "l2t_dlf":
            name += f" (guard kept the base in {s['kept_base']}/{s['seeds']})"
        lines.append(f"| {s['noise']} | {s['model']} | {name} | {s['seeds']} | {s['test_error_mean']:.2f} ± "
                     f"{s['test_error_std']:.2f} | {s['final_test_error_mean']:.2f} ± {s['final_test_error_std']:.2f} | "
                     f"{s['selection_dev_error_mean']:.2f} | " + ", ".join(f"{e:.2f}" for e in s["test_errors"]) + " |")
        if "taught" in s:
            t = s["taught"]
            lines.append(f"| {s['noise']} | {s['model']} | l2t_dlf's taught students (no guard) | {s['seeds']} | "
                         f"{t['taught_test_error_mean']:.2f} ± {t['taught_test_error_std']:.2f} | "
                         f"{t['taught_final_test_error_mean']:.2f} ± {t['taught_final_test_error_std']:.2f} | | "
                         + ", ".join(f"{e:.2f}" for e in t["test_errors"]) + " |")
    lines += ["", "| noise | student | L2T-DLF minus | seeds | guarded: mean (points) | 95 % interval | wins | "
                  "unguarded: mean | 95 % interval | wins |", "|---|---|---|---|---|---|---|---|---|---|"]
    for p, u in zip(paired, unguarded):
        lines.append(f"| {p['noise']} | {p['model']} | {p['baseline']} | {p['seeds']} | {p['mean_difference']:+.2f} | "
                     f"{_interval(p)} | {p['wins']}/{p['seeds']} | {u['mean_difference']:+.2f} | {_interval(u)} | "
                     f"{u['wins']}/{u['seeds']} |")
    return "\n".join(lines)


def format_teacher_rows(rows: list[dict]) -> str:
    """Markdown: per seed, the guard's decision, the reported taught student (and, beside a kept one, the fresh
    student of the same teacher) and what the teacher handed out (its means over training)."""
    lines = ["| noise | student | seed | base | guard p | kept | taught student | taught test error % | "
             "selection-dev % | fresh student: test % | selection-dev % | q | eps | corrected mass | loss scale |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in (r for r in rows if r["method"] == "l2t_dlf"):
        h = r["handed_out"]
        fresh = (f"{100 * r['fresh_test_error']:.2f} | {100 * r['fresh_selection_dev_error']:.1f}"
                 if "fresh_test_error" in r else " | ")
        lines.append(f"| {r['noise']} | {r['model']} | {r['seed']} | {r['base']} | {r['guard_p_value']:.3f} | "
                     f"{'base' if r['kept_base'] else 'teacher'} | {r.get('student', 'fresh')} | "
                     f"{100 * r['taught_test_error']:.2f} | {100 * r['taught_selection_dev_error']:.1f} | {fresh} | "
                     f"{h['q']:.3f} | {h['eps']:.3f} | {h['corrected_mass']:.3f} | {h['scale']:.3f} |")
    return "\n".join(lines)


def _interval(p: dict) -> str:
    return "n/a (one seed)" if p["ci95"] is None else "[{:+.2f}, {:+.2f}]".format(*p["ci95"])
