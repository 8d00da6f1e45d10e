"""Adaptive ticket sharing (DESIGN.md decision 8): per-task gates learned jointly, starting from the
super tickets, with a learned task x task affinity through which a task can take up units of other
tasks' tickets.

For task t and every unit u (attention heads, FFN units), the gate logit is

    z_t[u] = scale * (2 T_t[u] - 1) + delta_t[u] + borrow * sum_{s != t} sigmoid(A[t, s]) * (2 T_s[u] - 1)

where T are the super tickets (binary), delta_t learned offsets (start 0) and A the affinity
(start `affinity_init`, so sigmoid(A) is small): at the start the hard gates `z > 0` are exactly the
tickets. Training samples binary gates with logistic noise and passes gradients straight through a
sigmoid (straight-through Gumbel-sigmoid): the forward pass always runs a binary subnetwork, the one
evaluation and export use (no soft-gate scaling to unlearn), while gradients reach delta and A.
Evaluation uses `z > 0`. A quadratic budget term keeps each task's expected density at its target
(default: its super ticket's density).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .gates import Gates
from .masks import Ticket, overlap


@dataclass(frozen=True)
class SharingOptions:
    scale: float = 3.0  # |initial logit| of a unit, from its ticket
    borrow: float = 2.0  # how far full affinity to another task moves a logit toward that task's ticket
    affinity_init: float = -4.0  # sigmoid(-4) = 0.018: tasks start almost independent
    temperature: float = 0.5  # of the relaxed gates' sigmoid (lower: sharper gradients)
    budget_weight: float = 10.0  # weight of (expected density - target)^2, per task and unit type


class StraightThroughGate(torch.autograd.Function):
    """Binary in the forward pass, the sigmoid's gradient in the backward pass."""

    @staticmethod
    def forward(ctx, noisy_logits: torch.Tensor, temperature: float) -> torch.Tensor:
        soft = torch.sigmoid(noisy_logits / temperature)
        ctx.save_for_backward(soft)
        ctx.temperature = temperature
        return (noisy_logits > 0).to(noisy_logits.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (soft,) = ctx.saved_tensors
        return grad * soft * (1 - soft) / ctx.temperature, None


class SharingModule(nn.Module):
    """Learned per-task gates over the units of one encoder, initialised from the super tickets."""

    def __init__(self, tickets: dict[str, Ticket], options: SharingOptions = SharingOptions()):
        super().__init__()
        self.names = list(tickets)
        self.options = options
        K = len(self.names)
        for part in ("attn_heads", "ffn"):
            signs = torch.stack([torch.as_tensor(getattr(tickets[n], part), dtype=torch.float32) * 2 - 1 for n in self.names])
            self.register_buffer(f"{part}_signs", signs)  # (K, *unit shape), +1 kept / -1 removed
            self.register_parameter(f"{part}_delta", nn.Parameter(torch.zeros_like(signs)))
        self.affinity = nn.Parameter(torch.full((K, K), options.affinity_init))
        self.register_buffer("targets", torch.tensor([[tickets[n].density()[i] for i in (0, 1)] for n in self.names]))

    @classmethod
    def from_config(cls, tickets: dict[str, Ticket], cfg) -> SharingModule:
        """From the `adaptive` section of a run config (config.SharingConfig)."""
        return cls(tickets, SharingOptions(cfg.scale, cfg.borrow, cfg.affinity_init, cfg.temperature, cfg.budget_weight))

    def logits(self, task: str, part: str) -> torch.Tensor:
        t = self.names.index(task)
        signs = getattr(self, f"{part}_signs")
        weights = torch.sigmoid(self.affinity[t]) * (1 - torch.eye(len(self.names), device=signs.device)[t])  # (K,)
        borrowed = torch.einsum("k,k...->...", weights, signs)
        return self.options.scale * signs[t] + getattr(self, f"{part}_delta")[t] + self.options.borrow * borrowed

    def hard_gates(self, task: str) -> Gates:
        """Binary gates for evaluation and export: z > 0."""
        with torch.no_grad():
            return Gates(*((self.logits(task, p) > 0).float() for p in ("attn_heads", "ffn")))

    def sampled_gates(self, task: str) -> Gates:
        """Binary gates for a training step, with straight-through gradients to the logits."""
        out = []
        for part in ("attn_heads", "ffn"):
            z = self.logits(task, part)
            u = torch.rand_like(z).clamp(1e-6, 1 - 1e-6)
            out.append(StraightThroughGate.apply(z + torch.log(u) - torch.log1p(-u), self.options.temperature))
        return Gates(*out)

    def budget_loss(self, task: str) -> torch.Tensor:
        """(expected density - target)^2 for heads and FFN units, weighted."""
        t = self.names.index(task)
        loss = 0.0
        for i, part in enumerate(("attn_heads", "ffn")):
            expected = torch.sigmoid(self.logits(task, part) / self.options.temperature).mean()
            loss = loss + (expected - self.targets[t, i]) ** 2
        return self.options.budget_weight * loss

    def tickets(self) -> dict[str, Ticket]:
        """The learned tickets (hard gates) of every task."""
        out = {}
        for name in self.names:
            g = self.hard_gates(name)
            out[name] = Ticket(g.attn_heads.cpu().numpy() > 0, g.ffn.cpu().numpy() > 0, {"kind": "adaptive"})
        return out

    def changed(self, tickets: dict[str, Ticket]) -> dict[str, dict[str, int]]:
        """Units whose hard gate differs from the super ticket it started at, per task: how far the
        learned sharing has actually moved (0 everywhere means Tickets-Share, plus gate noise)."""
        out = {}
        for i, (name, ticket) in enumerate(tickets.items()):
            out[name] = {}
            for key, part in (("heads", "attn_heads"), ("ffn", "ffn")):
                start = getattr(self, f"{part}_signs")[i].cpu().numpy() > 0
                kept = getattr(ticket, part)
                out[name][f"{key}_gained"] = int((kept & ~start).sum())
                out[name][f"{key}_dropped"] = int((start & ~kept).sum())
        return out

    def report(self) -> dict:
        """Achieved vs target density per task, units changed from the super tickets, the affinity and
        the overlap of the hard masks."""
        tickets = self.tickets()
        densities = {n: {"heads": t.density()[0], "ffn": t.density()[1],
                         "target_heads": float(self.targets[i, 0]), "target_ffn": float(self.targets[i, 1])}
                     for i, (n, t) in enumerate(tickets.items())}
        affinity = torch.sigmoid(self.affinity.detach()).cpu().numpy()
        np.fill_diagonal(affinity, 0.0)
        return {"tasks": self.names, "density": densities, "changed": self.changed(tickets),
                "affinity": affinity.tolist(), "overlap": overlap(tickets)}
