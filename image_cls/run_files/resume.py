"""Resuming an interrupted run from OUT/checkpoint_last.pt.

The periodic checkpoint is an ordinary student/teacher checkpoint plus a
"progress" entry (counters, optimizers, RNG, logs so far).  A resume must use
the options of the run that wrote it, except those that cannot change the
result (listed in FREE_OPTIONS), or it would silently continue another run.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from .checkpoints import CheckpointError, load_checkpoint

LAST_CHECKPOINT = "checkpoint_last.pt"
# `out` is where the checkpoint was found, so "runs/x" and "./runs/x" (or a moved folder) are the same run
FREE_OPTIONS = ("resume", "no_progress", "no_tensorboard", "save_every", "max_non_finite", "device", "data_root",
                "download", "out")


def run_options(args: argparse.Namespace) -> dict:
    """The options that define a run's result (what a resume must repeat)."""
    return {k: v for k, v in vars(args).items() if k not in FREE_OPTIONS}


def load_progress(out: str | Path, kind: str, args: argparse.Namespace) -> dict:
    """OUT's last periodic checkpoint, or CheckpointError (one line) if it is missing or from another run."""
    path = Path(out) / LAST_CHECKPOINT
    if not path.is_file():
        finished = " (the run there has finished)" if (Path(out) / "summary.json").is_file() else ""
        raise CheckpointError(f"--resume: there is no {path} to resume from{finished}; run without --resume, "
                              f"with --save-every N to write one")
    checkpoint = load_checkpoint(path, kind)
    if "progress" not in checkpoint:
        raise CheckpointError(f"--resume: {path} holds no training progress; run without --resume")
    saved, wanted = checkpoint["args"], run_options(args)
    differs = [k for k in sorted(set(saved) | set(wanted)) if k not in FREE_OPTIONS and saved.get(k) != wanted.get(k)]
    if differs:
        name = differs[0]
        raise CheckpointError(f"--resume: {path} belongs to a different run (--{name.replace('_', '-')} was "
                              f"{saved.get(name)!r}, now {wanted.get(name)!r}); repeat that run's options or use "
                              f"another --out")
    remove_stale_temp_files(path)
    return checkpoint


def unfit_message(out: str | Path, err: Exception) -> str:
    """One line for a checkpoint whose contents do not fit this run's objects (another code version or teacher)."""
    detail = " ".join(str(err).split())[:200]
    return (f"--resume: {Path(out) / LAST_CHECKPOINT} does not fit this run ({type(err).__name__}: {detail}); "
            f"start afresh without --resume or use another --out")


def remove_stale_temp_files(path: Path) -> None:
    """Delete the temp files of saves that a kill interrupted (save_atomic names them .NAME.*.tmp)."""
    for stale in path.parent.glob(f".{path.name}.*.tmp"):
        stale.unlink(missing_ok=True)
