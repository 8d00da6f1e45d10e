"""A single-task ticket run trains a physically pruned working copy of the encoder.

Sliced execution (sliced.py) computes with only a ticket's kept weights, but at every step it gathers
them from the full-size parameters, scatters their gradients into zero-filled full-size gradients, and
the optimizer steps the full size before `FrozenSlices` puts the removed units back: about as much work
again as the sliced matmuls. A run with one task and a fixed ticket never uses its removed units, so it
trains the kept slices as parameters of their own: for the whole run, every Linear a kept unit owns a
part of is swapped for a smaller one holding copies of its kept rows or columns, and the optimizer only
ever sees those.

Nothing outside the training loop sees the difference. Inside `full_shape()` the trained slices are
written back into the full-size Linears, which are swapped back in, and the optimizer state is
expanded to full-size moments (zero for the removed units, as the sliced path leaves them); every
checkpoint and best-weights save, and a resume, happen there. Checkpoints, export, reopening a run and
the ticket files stay full-size, and a run may resume with or without a working copy.

The forward and backward compute the same matmuls on the same values as the sliced path, and AdamW is
elementwise, so a run follows the sliced one up to float rounding in the gradient-norm clip's sum.
Placeholder units (a layer that kept none) compute as in sliced.py and are never written back: the
full-size encoder keeps its removed units as they were, as `FrozenSlices` does.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .config import Config
from .model import MultiTaskModel
from .sharing import FixedTickets
from .sliced import Slice, SlicedTicket, swap_module

log = logging.getLogger(__name__)


class PrunedLinear(nn.Module):
    """A Linear holding copies of one `Slice` of a full-size Linear: its kept rows (and their biases),
    or its kept columns (with the full Linear's own bias, shared)."""

    def __init__(self, linear: nn.Linear, part: Slice):
        super().__init__()
        self.part = part
        self.weight = _copy(linear.weight, part.dim, part.index)
        if linear.bias is not None and part.dim == 0:
            self.bias = _copy(linear.bias, 0, part.index)
        else:
            self.bias = linear.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, *self.part.silence(self.weight, self.bias))


def _copy(param: nn.Parameter, dim: int, index: torch.Tensor) -> nn.Parameter:
    """A parameter of its own holding `param`'s slice, trainable where `param` is."""
    return nn.Parameter(param.detach().index_select(dim, index), requires_grad=param.requires_grad)


@dataclass
class _Pair:
    """One Linear of the encoder: where it is, the full-size module and its pruned copy."""

    path: str
    full: nn.Linear
    pruned: PrunedLinear

    def params(self) -> list[tuple[nn.Parameter, nn.Parameter, int]]:
        """(pruned, full, dim) for each parameter the copy owns (the weight, and a row slice's bias)."""
        dim = self.pruned.part.dim
        pairs = [(self.pruned.weight, self.full.weight, dim)]
        if self.pruned.bias is not None and self.pruned.bias is not self.full.bias:
            pairs.append((self.pruned.bias, self.full.bias, 0))
        return pairs


class WorkingCopy:
    """The encoder of `model` with its ticket's Linears swapped for pruned copies, until the run ends."""

    def __init__(self, model: MultiTaskModel, ticket: SlicedTicket):
        self.model = model
        encoder = model.encoder
        self.pairs = [_Pair(path, encoder.get_submodule(path), PrunedLinear(encoder.get_submodule(path), part))
                      for path, part in ticket.slices.items()]
        self._swap_in()

    def _swap_in(self) -> None:
        for pair in self.pairs:
            swap_module(self.model.encoder, pair.path, pair.pruned)
        self.model.sharing.encoder_is_ticket = True

    def _swap_out(self) -> None:
        for pair in self.pairs:
            swap_module(self.model.encoder, pair.path, pair.full)
        self.model.sharing.encoder_is_ticket = False

    @contextlib.contextmanager
    def full_shape(self, optimizer: torch.optim.Optimizer) -> Iterator[None]:
        """The model and optimizer as full-size ones inside the block (to save or restore them); on exit
        the working copy is read again from them."""
        with torch.no_grad():
            for pair in self.pairs:
                if not pair.pruned.part.placeholder:
                    for pruned, full, dim in pair.params():
                        full.index_copy_(dim, pair.pruned.part.index, pruned)
        self._move_optimizer(optimizer, to_full=True)
        self._swap_out()
        try:
            yield
        finally:
            self._swap_in()
            with torch.no_grad():
                for pair in self.pairs:
                    for pruned, full, dim in pair.params():
                        pruned.copy_(full.index_select(dim, pair.pruned.part.index))
            self._move_optimizer(optimizer, to_full=False)

    def _move_optimizer(self, optimizer: torch.optim.Optimizer, to_full: bool) -> None:
        """Point the optimizer at the full-size parameters with full-size state (zero where the ticket
        removes), or back at the pruned ones with their slices of it."""
        where = {}  # id of the parameter the optimizer has now -> (it, the one it gets, dim, index, full shape)
        for pair in self.pairs:
            for pruned, full, dim in pair.params():
                source, target = (pruned, full) if to_full else (full, pruned)
                where[id(source)] = (source, target, dim, pair.pruned.part.index, full.shape)
        for group in optimizer.param_groups:
            group["params"] = [where[id(p)][1] if id(p) in where else p for p in group["params"]]
        for source, target, dim, index, full_shape in where.values():
            state = optimizer.state.pop(source, None)
            if state is None:
                continue
            optimizer.state[target] = {k: _resize(v, source.shape, full_shape, dim, index, to_full) for k, v in state.items()}


def _resize(value, shape: torch.Size, full_shape: torch.Size, dim: int, index: torch.Tensor, to_full: bool):
    """One optimizer state entry: a per-element tensor expanded to (or sliced from) full size, else as is."""
    if not torch.is_tensor(value) or value.shape != shape:
        return value  # Adam's step count
    if to_full:
        return value.new_zeros(full_shape).index_copy_(dim, index, value)
    return value.index_select(dim, index)


def for_run(model: MultiTaskModel, cfg: Config) -> WorkingCopy | None:
    """A working copy where it is exact: one task through a fixed, sliced ticket, its removed units frozen
    (`train.pruned_copy`); None otherwise, and for a ticket that removes nothing."""
    sharing = model.sharing
    if not (cfg.train.pruned_copy and cfg.train.sliced and cfg.train.masked_updates == "freeze"
            and isinstance(sharing, FixedTickets) and len(model.specs) == 1):
        return None
    plan = sharing.eval_gates(model.encoder, next(iter(model.specs)))
    if not isinstance(plan, SlicedTicket) or not plan.slices:
        return None
    full = sum(p.numel() for p in model.encoder.parameters())
    copy = WorkingCopy(model, plan)
    log.info("training a pruned working copy of the encoder: %.1fM of its %.1fM weights",
             sum(p.numel() for p in model.encoder.parameters()) / 1e6, full / 1e6)
    return copy


def full_shape(copy: WorkingCopy | None, optimizer: torch.optim.Optimizer) -> contextlib.AbstractContextManager:
    """`copy.full_shape(optimizer)`, or nothing to do for a run without a working copy."""
    return copy.full_shape(optimizer) if copy is not None else contextlib.nullcontext()
