"""Checkpoint files: written atomically (temp file + rename) so that a crash or
kill during a save leaves the previous file intact, and read with a one-line
error when a file is missing, truncated or of the wrong kind."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

from fairseq_l2t.non_finite import first_non_finite
from fairseq_l2t.teacher import Teacher
from fairseq_l2t.teacher_spec import teacher_mismatch

from ..training.distributed import is_main, max_over_ranks


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


def save_finite(obj: dict, path: str | Path,
                unchecked: tuple[str, ...] = ("args", "history", "loss_snapshots")) -> None:
    """save_atomic, but refuse (FloatingPointError) a checkpoint with a non-finite tensor outside the logs, so
    a run that blew up keeps its last good file."""
    bad = first_non_finite({k: v for k, v in obj.items() if k not in unchecked})
    if bad is not None:
        raise FloatingPointError(f"{bad} is not finite; refusing to overwrite {path} with a poisoned checkpoint "
                                 f"(the last good one is kept): lower the learning rates")
    save_atomic(obj, path)


def save_finite_on_main(obj: dict, path: str | Path) -> None:
    """save_finite on rank 0 only (other ranks' `obj` is ignored), with its verdict shared: when rank 0 refuses a
    non-finite checkpoint or cannot write it, every rank raises (FloatingPointError or OSError) together instead
    of the others hanging in the next collective."""
    error: Exception | None = None
    if is_main():
        try:
            save_finite(obj, path)
        except (FloatingPointError, OSError) as err:
            error = err
    verdict = max_over_ranks(0 if error is None else 1 if isinstance(error, FloatingPointError) else 2)
    if error is not None:
        raise error
    if verdict == 1:
        raise FloatingPointError(f"process 0 refused to write {path}: a tensor is not finite; lower the learning rates")
    if verdict == 2:
        raise OSError(f"process 0 could not write {path}; see its error")


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


def teacher_from_payload(payload: dict, num_classes: int | None = None, num_features: int | None = None) -> Teacher:
    """Rebuild a saved teacher, refusing (one line) one made for a different label set or state."""
    teacher = Teacher.from_config(payload["config"])
    teacher.load_state_dict(payload["state"])
    mismatch = teacher_mismatch(payload["config"], teacher.num_classes if num_classes is None else num_classes,
                                teacher.num_features if num_features is None else num_features)
    if mismatch is not None:
        raise CheckpointError(f"the teacher {mismatch}; train a teacher for this dataset with these --state-features")
    return teacher
