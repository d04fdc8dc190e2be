"""Checkpoints that cannot serve this run, as one line instead of a traceback.

A run killed while fairseq copies checkpoint_best.pt to checkpoint_last.pt
(that copy is not atomic) leaves a truncated file, and a checkpoint made with
another fairseq-preprocess dictionary only fails deep inside load_state_dict.
With the plugin loaded, fairseq's loader names the file and the fix instead.
"""
import pickle
import zipfile
from typing import Optional

from fairseq import checkpoint_utils

from .errors import L2TConfigError

UNREADABLE = (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile)
_target_vocabulary: Optional[int] = None


def expect_target_vocabulary(size: int) -> None:
    """Declare this run's target dictionary size (the l2t_translation task does, when it is set up)."""
    global _target_vocabulary
    _target_vocabulary = size


def _readable(load):
    def load_checkpoint_to_cpu(path, *args, **kwargs):
        try:
            state = load(path, *args, **kwargs)
        except UNREADABLE as err:
            raise L2TConfigError(f"checkpoint {path} cannot be read ({type(err).__name__}): it is truncated or "
                                 f"corrupt; use an intact earlier one (when resuming: --restore-file "
                                 f"checkpoint_<epoch>_<updates>.pt) or delete it to start again") from err
        embedding = state.get("model", {}).get("decoder.embed_tokens.weight")
        if _target_vocabulary is not None and embedding is not None and embedding.size(0) != _target_vocabulary:
            raise L2TConfigError(f"checkpoint {path} was trained with a target dictionary of {embedding.size(0)} "
                                 f"types but this data-bin's has {_target_vocabulary}; use the data-bin it was "
                                 f"trained on, or a new --save-dir")
        return state
    load_checkpoint_to_cpu._l2t = True
    return load_checkpoint_to_cpu


if not getattr(checkpoint_utils.load_checkpoint_to_cpu, "_l2t", False):
    checkpoint_utils.load_checkpoint_to_cpu = _readable(checkpoint_utils.load_checkpoint_to_cpu)
