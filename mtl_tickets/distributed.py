"""Data-parallel training under `torchrun` (gloo on CPU, nccl on GPU).

Every rank draws the same task at every step (the scheduler is seeded by run seed and step) and
takes its own shard of that task's global batch; gradients are averaged with one all-reduce of a
flattened buffer. Gradients of parameters a step did not use (other tasks' heads) count as zeros,
so per-task heads and masked units need no `find_unused_parameters` machinery.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def device(self) -> torch.device:
        return torch.device(f"cuda:{self.local_rank}") if torch.cuda.is_available() else torch.device("cpu")


def launched_size() -> int:
    """How many processes torchrun launched (1 without torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def init() -> World:
    """The process group from torchrun's environment, or a world of one."""
    if launched_size() == 1:
        return World()
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
    world = World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    if torch.cuda.is_available():
        torch.cuda.set_device(world.local_rank)
    return world


def average_gradients(model: nn.Module, world: World) -> None:
    if world.size == 1:
        return
    # Every rank ran the same task through the same gates, so the same parameters have gradients; the
    # others (other tasks' heads and scores) keep none, and Adam leaves them alone, as in one process.
    params = [p for p in model.parameters() if p.grad is not None]
    grads = [p.grad for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world.size
    offset = 0
    for p, g in zip(params, grads, strict=True):
        n = g.numel()
        p.grad = flat[offset : offset + n].view_as(p)
        offset += n


def mean(value: float, world: World) -> float:
    """The mean of a number over ranks (the same on every rank)."""
    if world.size == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=world.device)
    dist.all_reduce(t)
    return float(t.item() / world.size)


def any_rank(flag: bool, world: World) -> bool:
    """True on every rank when it is true on one (a stop signal reaches all ranks together)."""
    return mean(float(flag), world) > 0 if world.size > 1 else flag


def shard(index, world: World):
    """This rank's share of a global batch's example indices."""
    return index[world.rank :: world.size]
