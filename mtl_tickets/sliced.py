"""Sliced execution of a fixed ticket: each layer computes with only the weights its kept units own,
so a training step or an evaluation costs what the ticket keeps (issue #14), not the full model.

Inside `with sliced.applied(encoder, plan):` every Linear a kept unit owns a part of (q, k, v and the
attention output per head; the two FFN layers per neuron) is swapped for a `SlicedLinear` that
gathers the kept rows or columns of the *shared* full-size weight at each forward. Autograd scatters
the gradients back into the full-size parameters, so the optimizer, `FrozenSlices`, checkpoints and
the torchrun all-reduce see the model unchanged; the original modules are always put back on exit.
The attention module infers its head count from the weight shapes (`view(..., -1, head_dim)`), so
each layer runs with its own number of kept heads.

Outputs, losses and gradients agree with the gated path (`gates.applied`) within float tolerance. As
in `export.prune_encoder`, a layer left with no head (or no FFN unit) computes one placeholder unit
whose output weights are multiplied by zero: its output is the projection's bias, and a removed
whole FFN layer drops that bias too, giving `LayerNorm(attention output)` (DESIGN.md decision 1).
Dropout draws differ from the gated path (the tensors are smaller), so training with dropout is
equivalent in distribution, not bit for bit.

Learned or scored gates (`sharing: adaptive`, importance scores) need the gated path: only a fixed
ticket can be sliced.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import gates as gating
from .gates import EncoderShape, module_paths
from .masks import Ticket
from .pruning import owned_slices


@dataclass(frozen=True)
class Slice:
    """The part of one Linear a ticket keeps: rows (dim 0) or columns (dim 1) `index` of its weight.

    `placeholder` marks a slice holding only a placeholder unit (its layer kept no head, or no FFN unit);
    `silent` the one that silences it: its weight slice is multiplied by zero, and with `drop_bias` its
    bias too (a removed whole FFN layer).
    """

    dim: int
    index: torch.Tensor  # (k,) long, on the model's device
    silent: bool = False
    drop_bias: bool = False
    placeholder: bool = False

    def silence(self, weight: torch.Tensor, bias: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """A placeholder unit's zero output and zero gradient, as a zero gate gives."""
        if self.silent:
            weight = weight * 0
        if bias is not None and self.drop_bias:
            bias = bias * 0
        return weight, bias


@dataclass(frozen=True)
class SlicedTicket:
    """A ticket as the slices of each Linear, by module path in the encoder; built once per run."""

    slices: dict[str, Slice]

    @classmethod
    def of(cls, encoder: nn.Module, ticket: Ticket) -> SlicedTicket:
        shape = EncoderShape.of(encoder)
        heads, ffn, silent_heads, silent_ffn = _with_placeholders(ticket, shape)
        device = next(encoder.parameters()).device
        paths = module_paths(encoder)
        slices = {}
        for name, dim, index in owned_slices(encoder, ~heads, ~ffn):  # the slices the *kept* units own
            module, _, kind = name.rpartition(".")
            if kind != "weight":
                continue  # a bias follows its weight
            number, _, in_layer = module.removeprefix(paths.layers + ".").partition(".")  # "3", "output.dense"
            layer = int(number)
            in_attention = in_layer in (paths.query, paths.key, paths.value, paths.attn_out)
            placeholder = bool(silent_heads[layer] if in_attention else silent_ffn[layer])
            silent = placeholder and in_layer in (paths.attn_out, paths.ffn_out)
            if index.size == encoder.get_parameter(name).shape[dim] and not silent:
                continue  # a fully kept Linear runs as it is
            drop_bias = silent and in_layer == paths.ffn_out and ticket.granularity == "layer"
            slices[module] = Slice(dim, torch.as_tensor(index, device=device), silent, drop_bias, placeholder)
        return cls(slices)


def _with_placeholders(ticket: Ticket, shape: EncoderShape) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(kept heads (L, H), kept FFN neurons (L, F), layers without heads, layers without FFN units):
    a whole-layer FFN ticket as neurons, and unit 0 kept as a placeholder where a layer kept none."""
    heads = ticket.attn_heads.astype(bool)
    ffn = ticket.ffn.astype(bool)
    if ffn.ndim == 1:
        ffn = np.repeat(ffn[:, None], shape.ffn, axis=1)
    silent_heads, silent_ffn = ~heads.any(axis=1), ~ffn.any(axis=1)
    heads, ffn = heads.copy(), ffn.copy()
    heads[silent_heads, 0] = True
    ffn[silent_ffn, 0] = True
    return heads, ffn, silent_heads, silent_ffn


class SlicedLinear(nn.Module):
    """A Linear computing with one `Slice` of a shared Linear's weight and bias.

    It registers the shared Parameters under the same names, so the model's parameters and
    state_dict keys do not change while it is swapped in. With gradients on, the slice is gathered at
    every forward (the weights change between steps); with them off (evaluation), once.
    """

    def __init__(self, linear: nn.Linear, part: Slice):
        super().__init__()
        self.weight, self.bias, self.part = linear.weight, linear.bias, part
        self._gathered: tuple[torch.Tensor, torch.Tensor | None] | None = None

    def sliced(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        part = self.part
        weight = self.weight.index_select(part.dim, part.index)  # (k, in) rows or (out, k) columns
        bias = self.bias
        if bias is not None and part.dim == 0:
            bias = bias.index_select(0, part.index)
        return part.silence(weight, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():
            return F.linear(x, *self.sliced())
        if self._gathered is None:
            self._gathered = self.sliced()
        return F.linear(x, *self._gathered)


def swap_module(root: nn.Module, path: str, module: nn.Module) -> nn.Module:
    """Put `module` at `path` in `root`; return what was there."""
    parent, _, name = path.rpartition(".")
    owner = root.get_submodule(parent) if parent else root
    old = getattr(owner, name)
    setattr(owner, name, module)
    return old


@contextlib.contextmanager
def applied(encoder: nn.Module, ticket: SlicedTicket) -> Iterator[None]:
    """Run the encoder through the ticket's slices inside the block; the original Linears are always
    put back on exit. The weights must not change inside a block run without gradients."""
    swapped: dict[str, nn.Module] = {}
    try:
        for path, part in ticket.slices.items():
            swapped[path] = swap_module(encoder, path, SlicedLinear(encoder.get_submodule(path), part))
        yield
    finally:
        for path, original in swapped.items():
            swap_module(encoder, path, original)


def fixed(encoder: nn.Module, ticket: Ticket, sliced: bool = True) -> SlicedTicket | gating.Gates:
    """How a fixed ticket runs: sliced (the cost follows what it keeps), or gated (`train.sliced: false`)."""
    return SlicedTicket.of(encoder, ticket) if sliced else ticket.gates()


def through(encoder: nn.Module, how: SlicedTicket | gating.Gates | None) -> contextlib.AbstractContextManager:
    """The context a task's forward runs in: sliced for a fixed ticket, gated for gates, else none."""
    if isinstance(how, SlicedTicket):
        return applied(encoder, how)
    return gating.applied(encoder, how)

