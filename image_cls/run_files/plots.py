"""PNG plots: learning curves of several runs, the loss matrix W that the teacher handed out at several stages
of a student's training, and what a noisy-label teacher handed out over training beside the error curves."""
from __future__ import annotations

import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from .corrected_trace import read_corrected_trace  # noqa: E402


def read_log(path: str | Path) -> dict[str, list[float]]:
    with Path(path).open() as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        raise ValueError(f"{path} has no rows")
    return {key: [float(r[key]) for r in rows] for key in rows[0]}


def plot_learning_curves(runs: dict[str, str | Path], out: str | Path) -> Path:
    """Dev error, test error (if logged) and smoothed training loss against student steps."""
    logs = {label: read_log(Path(path) / "log.csv" if Path(path).is_dir() else path) for label, path in runs.items()}
    has_test = all("test_accuracy" in log for log in logs.values())
    panels = [("dev_accuracy", "dev error"), ("train_loss", "training cross-entropy (EMA)")]
    if has_test:
        panels.insert(1, ("test_accuracy", "test error"))
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.8))
    for ax, (key, title) in zip(axes, panels):
        for label, log in logs.items():
            values = [1 - v for v in log[key]] if key.endswith("accuracy") else log[key]
            ax.plot(log["step"], values, label=label)
        ax.set_title(title)
        ax.set_xlabel("student step")
        ax.xaxis.set_major_locator(MaxNLocator(5))  # step labels such as 17500 run together otherwise
        ax.grid(alpha=0.3)
        if key.endswith("accuracy"):
            ax.set_yscale("log")
    axes[0].legend()
    fig.tight_layout()
    return _save(fig, out)


def plot_loss_matrices(trace_path: str | Path, out: str | Path, stages: int = 4) -> Path:
    """Heatmaps of W - W_base (W_base: the teacher's base loss, I for cross-entropy) at `stages` evenly spaced
    evaluations of a taught student."""
    trace = torch.load(trace_path, map_location="cpu", weights_only=True)["snapshots"]
    trace = [s for s in trace if s["W"] is not None]
    if not trace:
        raise ValueError(f"{trace_path} holds no dense W to draw (vocabulary too large)")
    picks = sorted({round(i * (len(trace) - 1) / max(stages - 1, 1)) for i in range(stages)})
    deltas = [trace[i]["W"] - _base_matrix(trace[i]) for i in picks]
    limit = max(float(d.abs().max()) for d in deltas) or 1.0
    fig, axes = plt.subplots(1, len(picks), figsize=(3.6 * len(picks), 3.6), squeeze=False)
    classes = deltas[0].shape[0]
    for ax, i, delta in zip(axes[0], picks, deltas):
        image = ax.imshow(delta.numpy(), cmap="RdBu_r", vmin=-limit, vmax=limit)
        gates = ", ".join(f"{g:.2f}" for g in trace[i]["gates"].tolist())
        ax.set_title(f"step {trace[i]['step']}\ngates [{gates}]", fontsize=9)
        ax.set_xlabel("gold class y")
        if classes <= 20:
            ax.set_xticks(range(classes))
            ax.set_yticks(range(classes))
    axes[0][0].set_ylabel("class i (weight on log p_i)")
    fig.colorbar(image, ax=axes[0].tolist(), shrink=0.8, label="W[i, y] - base W[i, y]")
    fig.suptitle("loss matrix handed out by the teacher (0 everywhere = the teacher's base loss)", fontsize=10)
    return _save(fig, out)


def plot_noisy_teacher(baseline: str | Path, taught: str | Path, out: str | Path,
                       pairs: tuple[tuple[int, int], ...] = ((0, 6), (2, 4)), baseline_label: str = "ce") -> Path:
    """What a corrected-family teacher handed out over a student's training, beside the error curves.

    Left: selection-half dev error and (if logged, --test-curve) test error of the `baseline` run and the taught
    run.  Middle: the teacher's robustness q, smoothing mass eps, mean corrected mass (1 - mean diagonal of T,
    the share of a true class's probability that the loss credits to other noisy labels) and loss scale a (an
    effective learning-rate factor, which short episodes learn to turn down).  Right: the
    correction's entries T[i, j] for the confusable `pairs` (i -> j and j -> i): the share of the student's
    probability of true class i that the loss credits to a noisy label j.
    """
    steps, structure, phis = read_corrected_trace(taught)
    fig, (errors, strengths, entries) = plt.subplots(1, 3, figsize=(15, 3.8))
    for label, folder in ((baseline_label, Path(baseline)), ("l2t_dlf", Path(taught))):
        log = read_log(folder / "log.csv")
        line = errors.plot(log["step"], [100 * e for e in log["selection_dev_error"]], label=f"{label}: dev "
                           f"(selection half)")[0]
        if "test_accuracy" in log:
            errors.plot(log["step"], [100 * (1 - a) for a in log["test_accuracy"]], color=line.get_color(),
                        linestyle="--", label=f"{label}: test")
    errors.set(title="error %", xlabel="student step")
    errors.legend(fontsize=8)
    matrices = [structure.transition_matrix(phi) for phi in phis]
    for name, values in (("robustness q", [float(structure.robustness_of(phi)) for phi in phis]),
                         ("smoothing eps", [float(structure.mass_and_scale(phi)[0]) for phi in phis]),
                         ("corrected mass", [float(1 - m.diagonal().mean()) for m in matrices]),
                         ("loss scale a", [float(structure.mass_and_scale(phi)[1]) for phi in phis])):
        strengths.plot(steps, values, label=name)
    strengths.set(title="the loss the teacher hands out", xlabel="student step")
    strengths.set_ylim(bottom=-0.02)
    strengths.legend(fontsize=8)
    for i, j in pairs:
        for a, b in ((i, j), (j, i)):
            entries.plot(steps, [float(m[a, b]) for m in matrices], label=f"T[{a}, {b}]")
    entries.set(title="correction between confusable classes", xlabel="student step")
    entries.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, out)


def _base_matrix(snapshot: dict) -> torch.Tensor:
    """The base loss's W (traces written before W_base was recorded came from cross-entropy-based teachers)."""
    base = snapshot.get("W_base")
    return torch.eye(snapshot["W"].shape[0]) if base is None else base


def _save(fig, out: str | Path) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return out
