"""How tasks share the encoder: one gate source per `sharing` mode, kept on the model as
`model.sharing`. Training, evaluation, export, `overlap` and the optimizer all ask it which units a task
runs through; nothing else decides.

- `full` (MT-DNN): every task runs the whole encoder.
- `tickets` (Tickets-Share): each task through its fixed super ticket, sliced by default (issue #14).
- `adaptive`: each task through a ticket it learns, starting at its super ticket (DESIGN.md decision 8).

Adaptive sharing is a fixed-budget swap. Task t keeps, per unit type (heads, FFN units), the k_t units
with the highest learned scores, k_t = its super ticket's count: every task runs at exactly its super
ticket's size, so the comparison with Tickets-Share is at equal parameters, and a change is a swap in
rank, not the crossing of a far threshold. The scores start at +margin (kept) and -margin (removed). The
gates are the binary top-k in training and evaluation alike (no sampling noise, no train/eval
mismatch); gradients pass straight through to the scores (movement pruning's top-k). A score's gradient
is <dL/dO_u, O_u>, the first-order effect of turning unit u on or off, which the gated forward computes
for removed units too: a task sees the gradient of a unit it does not keep, including one that only
another task's ticket keeps (borrowing; `adaptive.borrow: false` limits its gains to units no other
ticket keeps). Scores are per task and unit, in their own optimizer group (no weight decay, their own
learning rate), frozen for a warm-up while the heads adapt and for a cool-down while the weights settle
on the final masks. An optional sharing loss (AdaShare's form) pulls a task's scores toward the others'.

Why this design: the first one (logit offsets at a +-3 margin, one affinity scalar per task pair,
logistic sampling noise and a quadratic density budget) moved no unit in any seed of mini-GLUE v1; a
probe with a faster rate moved units one way only, regrowing the full model. Adam moves a score by at
most about its learning rate per step (less when the gradient's sign wavers) and does not see the
gradient's scale, so only margin / lr matters: a swap needs at least margin / lr steps of a consistent
gradient. The pilot (benchmarks/results/adaptive_pilot.md) chose it: at 50 no unit moved in a mini-GLUE
run; at 10 (the default) each task swapped 2 heads and about 3 % of its FFN units, most of them taken from
other tasks' tickets; at 2 about 9 %. A top-k holds the density by construction.
`../shared/reference/adaptive_sharing.md` has the methods this follows.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from . import sliced
from .config import SharingConfig
from .gates import Gates
from .masks import Ticket, jaccard, overlap
from .optim import FrozenSlice
from .pruning import owned_slices

PARTS = ("attn_heads", "ffn")


class Sharing(nn.Module):
    """The gate source of a run: which units each task runs through, in training and in evaluation.

    A fixed ticket runs sliced (or gated with `sliced=False`); the slices and the weight slices frozen
    for a task are built once per ticket and reused while it does not change.
    """

    def __init__(self, use_sliced: bool = True):
        super().__init__()
        self.use_sliced = use_sliced
        self.encoder_is_ticket = False  # set while a pruned working copy (pruned_copy.py) is the encoder: run it whole
        self._built: dict[str, tuple[bytes, sliced.SlicedTicket | Gates, list[FrozenSlice]]] = {}

    def ticket(self, task: str) -> Ticket | None:
        """The task's ticket now; None when it runs the whole encoder."""
        return None

    def tickets(self) -> dict[str, Ticket]:
        """Each task's ticket now; empty when every task runs the whole encoder."""
        return {}

    def learns_at(self, step: int, total_steps: int) -> bool:
        """Whether the gates learn at this step (only `adaptive`, inside its window)."""
        return False

    def train_gates(self, encoder: nn.Module, task: str, learn: bool) -> sliced.SlicedTicket | Gates | None:
        return self.eval_gates(encoder, task)

    def eval_gates(self, encoder: nn.Module, task: str) -> sliced.SlicedTicket | Gates | None:
        """Binary and deterministic: the task's current ticket, sliced or gated."""
        return self._fixed(encoder, task)[0]

    def frozen(self, encoder: nn.Module, task: str) -> list[FrozenSlice]:
        """The weight slices the task's removed units own, left untouched by its optimizer steps."""
        return self._fixed(encoder, task)[1]

    def trained_units(self) -> Ticket | None:
        """The units some task of the run trains, where that is fixed for the run; None: any unit may be."""
        return None

    def penalty(self, task: str) -> torch.Tensor | None:
        return None

    def report(self) -> dict | None:
        return None

    def _fixed(self, encoder: nn.Module, task: str) -> tuple[sliced.SlicedTicket | Gates | None, list[FrozenSlice]]:
        ticket = self.ticket(task)  # this task's only: a training step asks at every step
        if ticket is None or self.encoder_is_ticket:
            return None, []
        key = ticket.attn_heads.tobytes() + ticket.ffn.tobytes()
        if task not in self._built or self._built[task][0] != key:
            self._built[task] = (key, sliced.fixed(encoder, ticket, self.use_sliced), self._frozen_slices(encoder, ticket))
        return self._built[task][1:]

    def _frozen_slices(self, encoder: nn.Module, ticket: Ticket) -> list[FrozenSlice]:
        """The slices of the ticket's removed units: with their optimizer state where another task trains
        them, the weights alone where no task does (`FrozenSlice.with_state`)."""
        trained = self.trained_units()
        if trained is None:
            groups = [(ticket.attn_heads, ticket.ffn, True)]
        else:  # owned_slices gives the slices of the units a mask does *not* keep
            groups = [(ticket.attn_heads | ~trained.attn_heads, ticket.ffn | ~trained.ffn, True),
                      (trained.attn_heads, trained.ffn, False)]
        device = next(encoder.parameters()).device
        return [FrozenSlice(encoder.get_parameter(name), dim, torch.as_tensor(index, device=device), with_state)
                for heads, ffn, with_state in groups for name, dim, index in owned_slices(encoder, heads, ffn)]


class FullSharing(Sharing):
    """`sharing: full`: no gates."""


class FixedTickets(Sharing):
    """`sharing: tickets`: each task through its fixed ticket. `tasks`: the run's tasks (default: those
    with a ticket); one without a ticket runs, and trains, the whole encoder."""

    def __init__(self, tickets: dict[str, Ticket], use_sliced: bool = True, tasks: list[str] | None = None):
        super().__init__(use_sliced)
        self._tickets = dict(tickets)
        self.tasks = list(tasks) if tasks is not None else list(tickets)

    def ticket(self, task: str) -> Ticket | None:
        return self._tickets.get(task)

    def tickets(self) -> dict[str, Ticket]:
        return dict(self._tickets)

    def trained_units(self) -> Ticket | None:
        """The units some task's ticket keeps; None (any unit) where a task has none, or for mixed FFN granularities."""
        tickets = list(self._tickets.values())
        if any(task not in self._tickets for task in self.tasks) or len({t.ffn.shape for t in tickets}) != 1:
            return None
        return Ticket(*(np.logical_or.reduce([getattr(t, p).astype(bool) for t in tickets]) for p in PARTS))


class TaskScores(nn.Module):
    """One task's learned unit scores (heads, FFN units), which units it may take, and how many it keeps."""

    def __init__(self, start: Ticket, candidates: Ticket, margin: float):
        super().__init__()
        for part in PARTS:
            kept = torch.as_tensor(getattr(start, part), dtype=torch.bool)
            self.register_parameter(part, nn.Parameter(torch.where(kept, margin, -margin)))
            self.register_buffer(f"{part}_candidates", torch.as_tensor(getattr(candidates, part), dtype=torch.bool))
            self.register_buffer(f"{part}_budget", torch.tensor(int(kept.sum())))

    def mask(self, part: str) -> torch.Tensor:
        """The binary top-k over the candidates, k = the budget."""
        scores = getattr(self, part).detach().masked_fill(~getattr(self, f"{part}_candidates"), float("-inf"))
        top = scores.flatten().topk(int(getattr(self, f"{part}_budget"))).indices
        return torch.zeros(scores.numel(), device=scores.device).index_fill_(0, top, 1.0).view_as(scores)

    def boundary(self, part: str) -> float:
        """Midway between the last kept candidate's score and the best removed one's."""
        scores = getattr(self, part).detach()[getattr(self, f"{part}_candidates")].flatten().sort(descending=True).values
        k = int(getattr(self, f"{part}_budget"))
        if k == 0 or k == len(scores):
            return float("nan")
        return float((scores[k - 1] + scores[k]) / 2)


def own_or_free(task: str, tickets: dict[str, Ticket]) -> Ticket:
    """The units a task may keep without borrowing: its own, and those no other task's ticket keeps."""
    own = tickets[task]
    others = [t for name, t in tickets.items() if name != task]
    free = [~np.logical_or.reduce([getattr(t, p) for t in others]) if others else np.ones_like(getattr(own, p)) for p in PARTS]
    return Ticket(own.attn_heads | free[0], own.ffn | free[1])


def random_swaps(start: Ticket, learned: Ticket, candidates: Ticket, rng: np.random.Generator) -> Ticket:
    """Swaps without learning (a control): `start` with as many units swapped, per unit type, as `learned`
    swapped, drawn at random: kept units dropped, candidate units it removed gained."""
    parts = []
    for part in PARTS:
        was, now, allowed = (getattr(t, part).astype(bool) for t in (start, learned, candidates))
        flips = int((now & ~was).sum())
        out = was.copy().ravel()
        out[rng.choice(np.flatnonzero(was), flips, replace=False)] = False
        out[rng.choice(np.flatnonzero(~was & allowed), flips, replace=False)] = True
        parts.append(out.reshape(was.shape))
    return Ticket(*parts, {"kind": "random_swaps"})


class AdaptiveSharing(Sharing):
    """`sharing: adaptive`: fixed-budget learned tickets, starting at the super tickets (module docstring)."""

    def __init__(self, tickets: dict[str, Ticket], options: SharingConfig, use_sliced: bool = True):
        super().__init__(use_sliced)
        self.names = list(tickets)
        self.options = options
        self.start = dict(tickets)
        self.scores = nn.ModuleDict({t: TaskScores(ticket, self._candidates(t), options.margin) for t, ticket in tickets.items()})

    def _candidates(self, task: str) -> Ticket:
        """Every unit, or (borrowing off) the task's own units and those no other task's ticket keeps."""
        own = self.start[task]
        if self.options.borrow:
            return Ticket(np.ones_like(own.attn_heads), np.ones_like(own.ffn))
        return own_or_free(task, self.start)

    def ticket(self, task: str) -> Ticket | None:
        if task not in self.scores:
            return None
        return Ticket(*(self.scores[task].mask(p).cpu().numpy() > 0 for p in PARTS), {"kind": "adaptive"})

    def tickets(self) -> dict[str, Ticket]:
        return {t: self.ticket(t) for t in self.scores}

    def learns_at(self, step: int, total_steps: int) -> bool:
        return self.options.warmup * total_steps <= step < (1 - self.options.cooldown) * total_steps

    def train_gates(self, encoder: nn.Module, task: str, learn: bool) -> sliced.SlicedTicket | Gates | None:
        """While learning: the binary top-k, with gradients passed straight through to the scores."""
        if not learn:
            return self.eval_gates(encoder, task)
        s = self.scores[task]
        return Gates(*(s.mask(p) + getattr(s, p) - getattr(s, p).detach() for p in PARTS))

    def penalty(self, task: str) -> torch.Tensor | None:
        """AdaShare's sharing loss: the mean distance of the task's scores to the other tasks' mean."""
        others = [s for t, s in self.scores.items() if t != task]
        if not self.options.share_weight or not others:
            return None
        own = self.scores[task]
        distance = sum((getattr(own, p) - torch.stack([getattr(o, p).detach() for o in others]).mean(0)).abs().mean()
                       for p in PARTS)
        return self.options.share_weight * distance

    def report(self) -> dict:
        """What the module has learned, against where it started (results.json at every evaluation, and
        TensorBoard): per task and unit type the units kept, gained, dropped and taken from other tasks'
        tickets, Jaccard to the super ticket and the share of scores near the decision boundary; task x
        task Jaccard of the learned masks, its change since the super tickets, and units taken."""
        learned = self.tickets()
        tasks: dict[str, dict] = {}
        for name, ticket in learned.items():
            start = self.start[name]
            tasks[name] = {}
            for part in PARTS:
                now, was = getattr(ticket, part), getattr(start, part)
                gained = now & ~was
                others = [getattr(self.start[o], part) for o in self.names if o != name]
                scores = getattr(self.scores[name], part).detach()
                candidates = getattr(self.scores[name], f"{part}_candidates")
                distance = (scores[candidates] - self.scores[name].boundary(part)).abs()
                tasks[name][part] = {
                    "kept": int(now.sum()), "target": int(was.sum()), "density": float(now.mean()),
                    "gained": int(gained.sum()), "dropped": int((was & ~now).sum()),
                    "jaccard_to_start": jaccard(now, was),
                    "taken_from_others": int((gained & np.logical_or.reduce(others)).sum()) if others else 0,
                    "near_boundary": float((distance < self.options.margin / 2).float().mean()),
                }
        taken = {p: [[int((getattr(learned[a], p) & ~getattr(self.start[a], p) & getattr(self.start[b], p)).sum())
                      if a != b else 0 for b in self.names] for a in self.names] for p in PARTS}
        start_overlap, now_overlap = overlap(self.start), overlap(learned)
        jaccard_now = {p: now_overlap[p]["jaccard"] for p in PARTS}
        change = {p: (np.array(jaccard_now[p]) - np.array(start_overlap[p]["jaccard"])).tolist() for p in PARTS}
        return {"tasks": self.names, "per_task": tasks, "jaccard": jaccard_now, "jaccard_change": change, "taken": taken}
