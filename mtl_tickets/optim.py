"""Optimizers and the learning-rate schedule of the recipe: AdamW (or MT-DNN's Adamax), no weight
decay on biases and LayerNorm, linear warm-up then linear decay to zero."""

from __future__ import annotations

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


class FrozenSlices:
    """Leaves the given parameter slices, and their optimizer state, exactly as they were across
    `optimizer.step()` (DESIGN.md decision 6): units masked for the current task are not moved by
    Adam momentum or weight decay on that task's steps.

        with FrozenSlices(optimizer, slices):
            optimizer.step()

    Adam's per-tensor step count still advances, so a frozen slice's bias correction is that of the
    whole tensor when it next moves (a small, documented approximation).
    """

    def __init__(self, optimizer: torch.optim.Optimizer, slices: list[tuple[nn.Parameter, int, torch.Tensor]]):
        self.optimizer, self.slices = optimizer, slices

    def _tensors(self, param: nn.Parameter) -> list[torch.Tensor]:
        state = self.optimizer.state.get(param, {})
        return [param.data, *(v for v in state.values() if torch.is_tensor(v) and v.shape == param.shape)]

    def __enter__(self) -> FrozenSlices:
        self.saved = [[t.index_select(dim, index).clone() for t in self._tensors(p)] for p, dim, index in self.slices]
        return self

    def __exit__(self, *exc) -> None:
        for (param, dim, index), saved in zip(self.slices, self.saved, strict=True):
            tensors = self._tensors(param)
            if len(tensors) != len(saved):  # optimizer state created by this very step: start it at zero there
                saved = saved + [torch.zeros_like(t.index_select(dim, index)) for t in tensors[len(saved):]]
            for tensor, values in zip(tensors, saved, strict=True):
                tensor.index_copy_(dim, index, values)
