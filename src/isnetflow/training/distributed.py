"""Data-parallel training with ``torch.distributed``, launched by ``torchrun``.

A training started by ``torchrun --nproc-per-node N`` (or ``isnetflow train --nproc N``, which runs
torchrun) reads its rank and world size from the environment torchrun sets (``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``) and joins one process group: gloo on CPU, nccl on CUDA.
Without those variables the training is a single process and nothing here calls a collective.

What each rank does (:func:`isnetflow.training.loop.train`):

* **Sampling.** Every rank holds the whole (in-memory) cohort and draws the same epoch permutation. The
  global batch of step ``s`` is ``perm[s*B*W : (s+1)*B*W]`` for per-rank batch ``B`` and ``W`` ranks, and
  rank ``r`` takes every ``W``-th index from ``r`` (:func:`shard`), as ``torch.utils.data.DistributedSampler``
  interleaves. So ``W`` ranks × batch ``B`` see, as a set, exactly the batch a single process sees with
  batch ``W*B``; the patient-grouped splits are computed before and do not change.
* **Gradients.** Each rank computes its local gradient; :meth:`DistContext.all_reduce_mean` averages them
  before the optimizer step. The ISNet step's gradient comes from a double backward (the heatmap is itself
  a gradient); the average is taken of that final gradient, so the all-reduce carries the double-backward
  path by construction. The cross-entropy and heatmap parts are averaged separately and the heatmap cap
  (``heatmap.grad_balance``) is applied to the averaged parts: the same cap a single process would apply to
  the global batch. ``DistributedDataParallel``'s reducer is not used: it only fires on ``.backward()``
  gradient accumulation and does not support ``torch.autograd.grad`` with ``create_graph``, which the ISNet
  step needs to keep its two parts apart.
* **Batch norm.** Per-rank batch statistics (as the authors' code and DDP's default): a rank's forward pass
  normalizes with its own batch's mean and variance, and the exact LRP batch-norm rule of that rank uses the
  same statistics (the ones its forward pass used; detached unless ``bn_stats_grad``). Running statistics are
  averaged across ranks at the end of every epoch, before validation and the checkpoint. ``SyncBatchNorm`` is
  not used: it changes what the LRP rule would have to differentiate (a cross-rank statistic) and costs a
  collective per layer per pass (three passes per ISNet step).
* **C1/C2.** The warm-up's foreground statistics are collected on each rank's shard and merged across ranks
  (Chan's parallel Welford update), so every rank derives the same range.
* **Validation, tracking, checkpoints.** Rank 0 validates, selects and writes checkpoints and MLflow; the
  epoch's metrics are broadcast so that every rank takes the same selection and early-stopping decision.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

__all__ = ["SINGLE", "DistContext", "distributed_env", "process_group", "shard"]


@dataclass(frozen=True)
class DistContext:
    """This process's place in the training: rank, world size and, on a node, its local rank."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1

    @property
    def is_main(self) -> bool:
        """True on rank 0, the process that logs and writes."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """True when more than one process trains."""
        return self.world_size > 1

    def all_reduce_mean(self, tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """The mean of each tensor over the ranks, in one flat all-reduce (identity for one process)."""
        if not self.distributed or not tensors:
            return list(tensors)
        flat = torch.cat([t.reshape(-1) for t in tensors])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat /= self.world_size
        out, offset = [], 0
        for t in tensors:
            out.append(flat[offset : offset + t.numel()].view_as(t))
            offset += t.numel()
        return out

    def average_gradients(self, model: nn.Module) -> None:
        """Replace every parameter's ``.grad`` by its mean over the ranks."""
        params = [p for p in model.parameters() if p.grad is not None]
        grads = [p.grad for p in params if p.grad is not None]
        for p, g in zip(params, self.all_reduce_mean(grads), strict=True):
            p.grad = g

    def average_running_stats(self, model: nn.Module) -> None:
        """Average batch-norm running means and variances over the ranks (floating buffers only)."""
        bufs = [b for b in model.buffers() if b.is_floating_point()]
        for b, mean in zip(bufs, self.all_reduce_mean([b.data for b in bufs]), strict=True):
            b.data.copy_(mean)

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank (pickled; for small things such as an epoch's metrics)."""
        if not self.distributed:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def all_gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order."""
        if not self.distributed:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        """Wait until every rank gets here (nothing for one process)."""
        if self.distributed:
            dist.barrier()


SINGLE = DistContext()
"""The context of a training that is not distributed."""


def distributed_env() -> DistContext:
    """The rank layout torchrun put in the environment (:data:`SINGLE` when there is none)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return SINGLE
    return DistContext(
        rank=int(os.environ["RANK"]),
        world_size=world,
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
        local_world_size=int(os.environ.get("LOCAL_WORLD_SIZE", "1")),
    )


@contextlib.contextmanager
def process_group(device: torch.device, timeout_s: float = 1800.0) -> Iterator[DistContext]:
    """Join (and afterwards leave) the process group torchrun describes; yields this rank's context.

    gloo on CPU, nccl on CUDA. A group somebody else initialized (a test, a notebook) is used as it is and
    left alone. One process (no ``WORLD_SIZE`` > 1): yields :data:`SINGLE` and starts nothing.
    """
    ctx = distributed_env()
    if not ctx.distributed:
        yield SINGLE
        return
    if dist.is_initialized():
        yield ctx
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend=backend, timeout=dt.timedelta(seconds=timeout_s))
    try:
        yield ctx
    finally:
        dist.destroy_process_group()


def shard(global_batch: np.ndarray, ctx: DistContext) -> np.ndarray:
    """This rank's part of a global batch: every ``world_size``-th index starting at ``rank``."""
    return global_batch[ctx.rank :: ctx.world_size] if ctx.distributed else global_batch
