"""Data-parallel image classification under torchrun (gloo, CPU).

Every rank holds the same student, teacher and optimizers and takes a
contiguous, equal slice of each global batch.  The student's gradients are
averaged before its SGD step (no DDP wrapper needed), and teacher episodes and
online lookaheads unroll each rank's slice with grad_sync = mean over ranks,
so every rank computes the hypergradient a single process would compute on
the whole batch.  Dev and test splits are sharded: evaluations and the dev
objective sum over ranks.  Only rank 0 writes files and shows progress bars.

Limit: BatchNorm statistics are per shard (as in plain DDP) and dropout masks
fall on different examples, so the ResNets and Wide ResNets do not reproduce a
1-process run exactly; the MLP and LeNet do, up to float summation order.
"""
from __future__ import annotations

import atexit
import os
from dataclasses import replace
from typing import Callable, Sequence

import torch
import torch.distributed as dist
from torch import Tensor, nn

from fairseq_l2t.distributed import all_reduce_mean, all_reduce_sum, check_identical, is_distributed, rank, world_size
from fairseq_l2t.hypergradient import HypergradResult
from fairseq_l2t.teacher import Teacher

from ..data.batches import BatchStream, eval_batches
from ..data.image_sets import ImageSet

Sync = Callable[[list[Tensor]], list[Tensor]]


def init_from_env() -> None:
    """Join torchrun's process group (gloo) when WORLD_SIZE > 1; a plain run stays a single process."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("gloo")
        atexit.register(dist.destroy_process_group)


def is_main() -> bool:
    """Rank 0, the one process that writes files and prints."""
    return rank() == 0


def max_over_ranks(value: int) -> int:
    """The largest of every rank's `value` (itself outside a process group): lets all ranks act on one rank's
    verdict together, where a rank that stopped alone would leave the others hanging in the next collective."""
    if not is_distributed():
        return value
    flag = torch.tensor([value], dtype=torch.int64)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return int(flag.item())


def require_divisible(batch_size: int) -> None:
    """ValueError unless every process can take an equal slice of each batch."""
    if batch_size % world_size():
        raise ValueError(f"batch size {batch_size} is not divisible by the {world_size()} processes (each takes an "
                         f"equal slice of every batch)")


class ShardedStream:
    """This rank's contiguous slice of every global batch of a BatchStream."""

    def __init__(self, stream: BatchStream):
        require_divisible(stream.batch_size)
        self.stream = stream
        self.shard = stream.batch_size // world_size()

    def batch_at(self, step: int) -> tuple[Tensor, Tensor]:
        inputs, target = self.stream.batch_at(step)
        rows = slice(rank() * self.shard, (rank() + 1) * self.shard)
        return inputs[rows], target[rows]


def shard_stream(stream: BatchStream) -> BatchStream | ShardedStream:
    return ShardedStream(stream) if is_distributed() else stream


def shard_split(data: ImageSet) -> ImageSet:
    """This rank's contiguous share of an evaluation split (sizes differ by at most one)."""
    if not is_distributed():
        return data
    bounds = [len(data) * r // world_size() for r in range(world_size() + 1)]
    rows = slice(bounds[rank()], bounds[rank() + 1])
    return replace(data, images=data.images[rows], labels=data.labels[rows])


def sharded_eval_batches(data: ImageSet, batch_size: int, mean: Sequence[float], std: Sequence[float],
                         device: torch.device | str = "cpu") -> list[tuple[Tensor, Tensor]]:
    """eval_batches over this rank's share (batches of at most `batch_size`, so any split size works);
    `evaluate` and dev_sync sum the shares."""
    shard = shard_split(data)
    return eval_batches(shard, max(1, min(batch_size, len(shard))), mean, std, device)


def average_gradients(model: nn.Module) -> None:
    """Mean of every parameter's .grad over ranks: the gradient of the global batch's mean loss."""
    if not is_distributed():
        return
    params = [p for p in model.parameters() if p.grad is not None]
    for p, g in zip(params, all_reduce_mean([p.grad for p in params])):
        p.grad.copy_(g)


def unroll_syncs() -> dict[str, Sync | None]:
    """grad_sync and dev_sync for an Unroll over this rank's shards (None: single process)."""
    if not is_distributed():
        return {"grad_sync": None, "dev_sync": None}
    return {"grad_sync": all_reduce_mean, "dev_sync": all_reduce_sum}


def state_sync() -> Sync | None:
    """StudentState.sync: every rank observes the global batch."""
    return all_reduce_sum if is_distributed() else None


def sync_teacher_grads(result: HypergradResult) -> None:
    """Average the hypergradient over ranks (already equal on every rank: this makes it bit-identical)."""
    if is_distributed():
        result.teacher_grads = tuple(all_reduce_mean(list(result.teacher_grads)))


def check_teacher(teacher: Teacher, where: str) -> None:
    """Raise unless every rank holds bit-identical teacher parameters."""
    check_identical(list(teacher.parameters()), f"teacher parameters after {where}")
