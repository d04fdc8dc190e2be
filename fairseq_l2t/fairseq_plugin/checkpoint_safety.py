"""Let fairseq load its own checkpoints under torch's weights-only unpickler.

torch >= 2.6 loads with weights_only=True; fairseq checkpoints pickle an
argparse.Namespace, omegaconf objects and numpy scalars, so fairseq-generate
and resume fail.
Instead of switching the safety off for the whole process
(TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1), allow-list exactly these classes.
"""
from __future__ import annotations

import argparse
import collections
import typing

import numpy
import torch
from numpy._core.multiarray import _reconstruct
from omegaconf import DictConfig, ListConfig
from omegaconf.base import ContainerMetadata, Metadata
from omegaconf.nodes import AnyNode, BooleanNode, EnumNode, FloatNode, IntegerNode, StringNode

FAIRSEQ_CHECKPOINT_GLOBALS = [
    argparse.Namespace, DictConfig, ListConfig, ContainerMetadata, Metadata,
    AnyNode, BooleanNode, EnumNode, FloatNode, IntegerNode, StringNode,
    typing.Any, dict, list, int, collections.defaultdict,
    # the best validation score (e.g. --eval-bleu) is stored as a numpy scalar
    numpy.ndarray, numpy.dtype, _reconstruct,
    *(type(numpy.dtype(name)) for name in ("bool", "int32", "int64", "float16", "float32", "float64")),
]

torch.serialization.add_safe_globals(FAIRSEQ_CHECKPOINT_GLOBALS)
