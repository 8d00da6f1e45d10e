"""Optimizers and the learning-rate schedule of the recipe: AdamW (or MT-DNN's Adamax), no weight
decay on biases and LayerNorm, linear warm-up then linear decay to zero."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .config import TrainConfig


def build_optimizer(model: nn.Module, cfg: TrainConfig, gate_lr: float | None = None) -> torch.optim.Optimizer:
    """The gate source's parameters (`model.sharing`: adaptive unit scores) get `gate_lr` and no weight
    decay; the rest weight decay except biases and LayerNorm weights."""
    sharing = getattr(model, "sharing", None)
    gate = [p for p in sharing.parameters() if p.requires_grad] if sharing is not None else []
    gate_ids = {id(p) for p in gate}
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad and id(param) not in gate_ids:
            (no_decay if param.dim() < 2 else decay).append(param)  # biases and LayerNorm weights
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if gate:
        groups.append({"params": gate, "weight_decay": 0.0, "lr": gate_lr or cfg.lr})
    if cfg.optimizer == "adamax":
        return torch.optim.Adamax(groups, lr=cfg.lr, foreach=cfg.fused_optimizer or None)  # Adamax has no fused kernel
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.999), eps=1e-8, fused=cfg.fused_optimizer or None)


def build_scheduler(optimizer: torch.optim.Optimizer, total_steps: int, warmup: float) -> torch.optim.lr_scheduler.LambdaLR:
    warmup_steps = int(warmup * total_steps)

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


@dataclass(frozen=True)
class FrozenSlice:
    """The part of a parameter (rows or columns `index` along `dim`) an optimizer step leaves as it is.

    `with_state=False` for a unit no task of the run trains: its gradient is zero at every step, so its
    optimizer state feeds only its own updates, which restoring the weights undoes (under AdamW's
    decoupled weight decay that state is exactly zero and stays so). Saving the weights alone is then
    exact and a third of the work: a single-task ticket run's removed units are all of this kind.
    """

    param: nn.Parameter
    dim: int
    index: torch.Tensor
    with_state: bool = True


class FrozenSlices:
    """Leaves the given parameter slices, and their optimizer state, exactly as they were across
    `optimizer.step()` (DESIGN.md decision 6): units masked for the current task are not moved by
    Adam momentum or weight decay on that task's steps.

        with FrozenSlices(optimizer, slices):
            optimizer.step()

    Adam's per-tensor step count still advances, so a frozen slice's bias correction is that of the
    whole tensor when it next moves (a small, documented approximation).
    """

    def __init__(self, optimizer: torch.optim.Optimizer, slices: list[FrozenSlice]):
        self.optimizer, self.slices = optimizer, slices

    def _tensors(self, part: FrozenSlice) -> list[torch.Tensor]:
        if not part.with_state:
            return [part.param.data]
        state = self.optimizer.state.get(part.param, {})
        return [part.param.data, *(v for v in state.values() if torch.is_tensor(v) and v.shape == part.param.shape)]

    def __enter__(self) -> FrozenSlices:
        self.saved = [[t.index_select(s.dim, s.index) for t in self._tensors(s)] for s in self.slices]  # copies
        return self

    def __exit__(self, *exc) -> None:
        for part, saved in zip(self.slices, self.saved, strict=True):
            tensors = self._tensors(part)
            if len(tensors) != len(saved):  # optimizer state created by this very step: start it at zero there
                saved = saved + [torch.zeros_like(t.index_select(part.dim, part.index)) for t in tensors[len(saved):]]
            for tensor, values in zip(tensors, saved, strict=True):
                tensor.index_copy_(part.dim, part.index, values)
