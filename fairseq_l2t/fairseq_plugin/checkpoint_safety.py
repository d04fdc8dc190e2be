"""Let fairseq load its own checkpoints under torch's weights-only unpickler.

torch >= 2.6 loads with weights_only=True; fairseq checkpoints pickle an
argparse.Namespace and omegaconf objects, so fairseq-generate and resume fail.
Instead of switching the safety off for the whole process
(TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1), allow-list exactly these classes.
"""
from __future__ import annotations

import argparse
import collections
import typing

import torch
from omegaconf import DictConfig, ListConfig
from omegaconf.base import ContainerMetadata, Metadata
from omegaconf.nodes import AnyNode, BooleanNode, EnumNode, FloatNode, IntegerNode, StringNode

FAIRSEQ_CHECKPOINT_GLOBALS = [
    argparse.Namespace, DictConfig, ListConfig, ContainerMetadata, Metadata,
    AnyNode, BooleanNode, EnumNode, FloatNode, IntegerNode, StringNode,
    typing.Any, dict, list, int, collections.defaultdict,
]

torch.serialization.add_safe_globals(FAIRSEQ_CHECKPOINT_GLOBALS)
