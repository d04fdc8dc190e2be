"""Collectives for data-parallel teacher training (torch.distributed, any backend).

Every helper is a no-op (a copy) outside an initialised process group, so the
same code runs as one process or under torchrun.  Reductions flatten their
tensors into one buffer per dtype, so a list of gradients costs one collective.
"""
from __future__ import annotations

import hashlib
from typing import Sequence

import torch
import torch.distributed as dist
from torch import Tensor


def is_distributed() -> bool:
    """True inside an initialised process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def all_reduce_sum(tensors: Sequence[Tensor]) -> list[Tensor]:
    """Element-wise sums over ranks, as new tensors (the inputs are untouched)."""
    if not is_distributed():
        return [t.detach().clone() for t in tensors]
    out: list[Tensor | None] = [None] * len(tensors)
    for dtype in dict.fromkeys(t.dtype for t in tensors):
        indices = [i for i, t in enumerate(tensors) if t.dtype == dtype]
        buffer = torch.cat([tensors[i].detach().reshape(-1) for i in indices])
        dist.all_reduce(buffer, op=dist.ReduceOp.SUM)
        for i, piece in zip(indices, buffer.split([tensors[i].numel() for i in indices])):
            out[i] = piece.view_as(tensors[i])
    return out


def all_reduce_mean(tensors: Sequence[Tensor]) -> list[Tensor]:
    """Element-wise means over ranks (for gradients of equal shards' mean losses)."""
    size = world_size()
    summed = all_reduce_sum(tensors)
    return summed if size == 1 else [t / size for t in summed]


def checksum(tensors: Sequence[Tensor]) -> int:
    """A 63-bit hash of the tensors' exact bytes (dtype and shape included)."""
    digest = hashlib.sha256()
    for t in tensors:
        t = t.detach().cpu().contiguous()
        digest.update(f"{t.dtype}{tuple(t.shape)}".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return int.from_bytes(digest.digest()[:8], "little") >> 1


def check_identical(tensors: Sequence[Tensor], what: str) -> None:
    """Raise RuntimeError unless every rank holds bit-identical `tensors`."""
    if not is_distributed():
        return
    device = "cuda" if dist.get_backend() == "nccl" else "cpu"  # NCCL reduces only CUDA tensors
    value = torch.tensor([checksum(tensors)], dtype=torch.int64, device=device)
    low, high = value.clone(), value.clone()
    dist.all_reduce(low, op=dist.ReduceOp.MIN)
    dist.all_reduce(high, op=dist.ReduceOp.MAX)
    if low.item() != high.item():
        raise RuntimeError(f"{what} differ between ranks (rank {rank()} of {world_size()})")
