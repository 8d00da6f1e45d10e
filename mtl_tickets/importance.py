"""Gradient-sensitivity importance of every unit (paper §3.1, Michel et al. 2019).

For a unit with gated output O and G = dL/dO, the score sums over examples b and tokens t the
absolute value of the per-token derivative with respect to its gate:

    I_head(l, h) = mean over batches of  sum_b sum_t | sum_i G[b,t,h,i] * O[b,t,h,i] |

on the fine-tuned model in eval mode, over the task's training set (unshuffled), with the task's
training loss. The absolute value is per (example, token), not of the batch gradient. Head scores
are L2-normalised per layer; FFN neuron scores too; whole-layer FFN scores are left as they are
(a global norm would not change their order). ../shared/reference/super_tickets_method.md §2.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from tqdm.auto import tqdm

from . import gates as gating
from .data import Encoded, collate
from .gates import EncoderShape, Gates

if TYPE_CHECKING:  # the model holds its gate source, which reads pruning, which reads these scores
    from .model import MultiTaskModel


@dataclass(frozen=True)
class Scores:
    """Importance per unit: attn_heads (L, H); ffn (L, F) for neurons or (L,) for whole layers."""

    attn_heads: np.ndarray
    ffn: np.ndarray

    def to_json(self) -> dict:
        return {"attn_heads": self.attn_heads.tolist(), "ffn": self.ffn.tolist()}

    @classmethod
    def from_json(cls, data: dict) -> Scores:
        return cls(np.asarray(data["attn_heads"], dtype=np.float64), np.asarray(data["ffn"], dtype=np.float64))


class _Accumulator:
    """Observer for `gates.applied`: adds each batch's per-token |<G, O>| sums per unit."""

    def __init__(self, shape: EncoderShape, granularity: str):
        self.batch = {"attn_heads": torch.zeros(shape.layers, shape.heads, dtype=torch.float64),
                      "ffn": torch.zeros((shape.layers, shape.ffn) if granularity == "neuron" else shape.layers,
                                         dtype=torch.float64)}

    def __call__(self, kind: str, layer: int, gated: torch.Tensor) -> None:
        output = gated.detach()  # not `gated` itself: a hook that holds its own tensor is a cycle through
        # autograd's C++ graph that Python's collector cannot see, and every activation it holds would leak

        def on_grad(grad: torch.Tensor) -> None:
            product = (grad * output).double()
            if kind == "attn_heads":
                per_token = product.sum(-1)  # (B, T, H, d) -> (B, T, H)
            elif self.batch["ffn"].dim() == 2:
                per_token = product  # (B, T, F): each neuron's per-token derivative
            else:
                per_token = product.sum(-1)  # (B, T, D) -> (B, T): the whole layer's gate
            self.batch[kind][layer] += per_token.abs().sum(dim=(0, 1))

        gated.register_hook(on_grad)

    def take(self) -> dict[str, torch.Tensor]:
        taken = {k: v.clone() for k, v in self.batch.items()}
        for v in self.batch.values():
            v.zero_()
        return taken


def score_units(
    model: MultiTaskModel,
    task: str,
    data: Encoded,
    granularity: str = "neuron",
    batch_size: int = 32,
    legacy_cumulative: bool = False,
    normalize: bool = True,
    progress: bool = True,
) -> Scores:
    """Importance of every attention head and FFN unit for one task.

    Args:
        legacy_cumulative: reproduce the reference code's ranking, which never zeroes `.grad` between
            batches and so weights batch j by (N - j + 1) (reference §2.3); default: the clean mean.
        normalize: L2-normalise head (and FFN neuron) scores within each layer.
    """
    shape = EncoderShape.of(model.encoder)
    acc = _Accumulator(shape, granularity)
    ones = Gates.ones(shape, granularity)
    was_training = model.training
    model.eval()
    totals = {k: torch.zeros_like(v) for k, v in acc.batch.items()}
    running = {k: torch.zeros_like(v) for k, v in acc.batch.items()}
    batches = [np.arange(i, min(i + batch_size, len(data))) for i in range(0, len(data), batch_size)]  # file order
    device = next(model.parameters()).device
    for index in tqdm(batches, desc=f"importance {task}", disable=not progress):
        batch = {k: v.to(device) for k, v in collate(data, index).items()}
        with gating.applied(model.encoder, ones, observer=acc):
            loss = model.loss(model(batch, task), batch["labels"], task)
        loss.backward()
        model.zero_grad(set_to_none=True)
        for kind, value in acc.take().items():
            running[kind] += value
            totals[kind] += running[kind] if legacy_cumulative else value
    model.train(was_training)
    heads, ffn = (totals[k].numpy() / len(batches) for k in ("attn_heads", "ffn"))
    if normalize:
        heads = heads / (np.linalg.norm(heads, axis=1, keepdims=True) + 1e-20)
        if ffn.ndim == 2:
            ffn = ffn / (np.linalg.norm(ffn, axis=1, keepdims=True) + 1e-20)
    return Scores(heads, ffn)
