"""Checkpoint files: written atomically (temp file + rename) so that a crash or
kill during a save leaves the previous file intact, and read with a one-line
error when a file is missing, truncated or of the wrong kind."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

from fairseq_l2t.teacher import Teacher


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used; the message is one line with the fix."""


def save_atomic(obj: dict, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(obj, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: str | Path, kind: str) -> dict:
    """Load a checkpoint written by this package; `kind` is 'teacher' or 'student'."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{kind} checkpoint {path} does not exist; check the path")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated / corrupt / not a torch file
        raise CheckpointError(f"{kind} checkpoint {path} cannot be read ({type(err).__name__}); "
                              f"it is corrupt or truncated: re-create it") from err
    if not isinstance(obj, dict) or obj.get("kind") != kind:
        found = obj.get("kind") if isinstance(obj, dict) else type(obj).__name__
        raise CheckpointError(f"{path} is not a {kind} checkpoint (found {found!r}); pass a file written by "
                              f"l2t-image-train-{kind}")
    return obj


def teacher_payload(teacher: Teacher) -> dict:
    return {"config": teacher.config(), "state": teacher.state_dict()}


def teacher_from_payload(payload: dict, num_classes: int | None = None, num_features: int | None = None) -> Teacher:
    """Rebuild a saved teacher, refusing one made for a different label set or state."""
    teacher = Teacher.from_config(payload["config"])
    teacher.load_state_dict(payload["state"])
    if num_classes is not None and teacher.num_classes != num_classes:
        raise CheckpointError(f"the teacher was trained for {teacher.num_classes} classes but this dataset has "
                              f"{num_classes}; train a teacher on this dataset")
    if num_features is not None and teacher.num_features != num_features:
        raise CheckpointError(f"the teacher reads {teacher.num_features} state features but this run provides "
                              f"{num_features}; match --per-class-features to the teacher's training run")
    return teacher
