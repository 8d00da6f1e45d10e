"""Tickets from importance scores: nested winning, losing and random tickets at a grid of sparsities.

One-shot pruning (reference §3): rank all heads globally by their (layer-normalised) score and drop
the lowest, always keeping `min_heads` per layer; rank FFN units the same way, separately. Losing
tickets drop the *most* important first; random tickets drop the same counts chosen at random
(without replacement, seeded; the reference code's draw with replacement is a bug). Masks at higher
sparsity are nested in those at lower sparsity because each kind ranks units once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from .gates import EncoderShape, module_paths, unit_slices
from .importance import Scores
from .masks import Ticket, params_of, unit_params

Kind = Literal["winning", "losing", "random"]
SparsityMode = Literal["units", "paired", "params"]


@dataclass(frozen=True)
class Level:
    """How many units one sparsity level removes."""

    sparsity: float  # the level as given (fraction of units, step of the pairing, or of parameters)
    heads: int  # attention heads removed
    ffn: int  # FFN units removed (neurons, or whole layers)


def reference_head_count(percent: float, shape: EncoderShape, min_heads: int = 1) -> int:
    """Heads the reference code's `determine_masking_sequence` removes at `percent` % (reference §3.1):
    int(H*L*p/100), capped at H*L - min_heads*L. (Its list of levels stops at the first capped one; a
    level here is computed on its own, so higher levels still remove more FFN layers.)"""
    total = shape.layers * shape.heads
    return min(int(total * percent / 100), total - min_heads * shape.layers)


def levels(sparsities: list[float], mode: SparsityMode, shape: EncoderShape, granularity: str, min_heads: int = 1) -> list[Level]:
    """Unit counts for each sparsity.

    - `units`: remove that fraction of the heads and of the FFN units.
    - `paired`: the reference pairing, step k = 10k % of heads with k whole FFN layers (sparsity k/10).
    - `params`: remove about that fraction of the encoder's parameters, heads and FFN units alike.
    """
    total_heads = shape.layers * shape.heads
    total_ffn = shape.layers * (shape.ffn if granularity == "neuron" else 1)
    cap = total_heads - min_heads * shape.layers
    out = []
    for s in sparsities:
        if mode == "paired":
            if granularity != "layer":
                raise ValueError("sparsity_mode 'paired' prunes whole FFN layers: set ffn_granularity to 'layer'")
            k = round(s * 10)
            out.append(Level(s, reference_head_count(10 * k, shape, min_heads), min(k, total_ffn)))
            continue
        fraction = s if mode == "units" else _fraction_for_params(s, shape, granularity)
        out.append(Level(s, min(cap, int(total_heads * fraction)), min(total_ffn, int(total_ffn * fraction))))
    return out


def _fraction_for_params(target: float, shape: EncoderShape, granularity: str) -> float:
    """The fraction of heads and FFN units whose removal removes `target` of the encoder parameters."""
    full = Ticket.full(shape, granularity)
    total = params_of(full, shape)
    p = unit_params(shape)
    prunable = shape.layers * (shape.heads * p["attn_head"]
                               + (shape.ffn * p["ffn_neuron"] if granularity == "neuron" else p["ffn_layer"]))
    return min(1.0, target * total / prunable)


def prune_order(scores: np.ndarray, kind: Kind, seed: int) -> np.ndarray:
    """Flat unit indices in the order they are removed."""
    flat = scores.ravel()
    if kind == "random":
        return np.random.default_rng(seed).permutation(flat.size)
    order = np.argsort(flat, kind="stable")  # least important first
    return order[::-1].copy() if kind == "losing" else order


def head_mask(scores: np.ndarray, n_remove: int, kind: Kind, seed: int, min_heads: int = 1) -> np.ndarray:
    """(L, H) keep-mask removing `n_remove` heads in `kind` order, protecting `min_heads` per layer:
    the last ones in that order (winning: the most important; losing: the least; random: at random)."""
    L, H = scores.shape
    order = prune_order(scores, kind, seed)
    protected, seen = set(), np.zeros(L, dtype=int)
    for unit in order[::-1]:  # the last in removal order are protected
        if seen[unit // H] < min_heads:
            protected.add(int(unit))
            seen[unit // H] += 1
    removable = [u for u in order if int(u) not in protected]
    keep = np.ones(L * H, dtype=bool)
    keep[removable[:n_remove]] = False
    return keep.reshape(L, H)


def ffn_mask(scores: np.ndarray, n_remove: int, kind: Kind, seed: int) -> np.ndarray:
    """Keep-mask over FFN units (neurons (L, F) or layers (L,)), no minimum (as the reference)."""
    keep = np.ones(scores.size, dtype=bool)
    keep[prune_order(scores, kind, seed)[:n_remove]] = False
    return keep.reshape(scores.shape)


def nested_tickets(scores: Scores, grid: list[Level], kind: Kind, seed: int = 0, min_heads: int = 1) -> dict[float, Ticket]:
    """One ticket per level; every ticket's units are a subset of the previous (sparser in denser)."""
    return {
        level.sparsity: Ticket(
            head_mask(scores.attn_heads, level.heads, kind, seed, min_heads),
            ffn_mask(scores.ffn, level.ffn, kind, seed + 1),
            {"kind": kind, "sparsity": level.sparsity, "heads_removed": level.heads, "ffn_removed": level.ffn},
        )
        for level in grid
    }


# ------------------------------------------------------------------------ the weights units own


def owned_slices(encoder, keep_heads: np.ndarray, keep_ffn: np.ndarray) -> list[tuple[str, int, np.ndarray]]:
    """(parameter name in the encoder, dim, indices) of the weights that the *removed* units own.

    A head owns its rows of Q, K, V (weights and biases) and its columns of the attention output
    projection; an FFN neuron its row (and bias) of the intermediate layer and its column of the output
    layer; a whole FFN layer both dense layers and the output bias. Physical pruning drops exactly
    these slices; a masked optimizer step leaves them untouched.
    """
    shape = EncoderShape.of(encoder)
    paths = module_paths(encoder)
    out = []
    for l in range(shape.layers):
        removed = unit_slices(paths, shape, np.flatnonzero(~keep_heads[l]), layer_neurons(~keep_ffn, l, shape.ffn))
        for path, dim, index in removed:
            name = f"{paths.layer(l)}.{path}"
            out += [(f"{name}.weight", dim, index)] + ([(f"{name}.bias", 0, index)] if dim == 0 else [])
        if keep_ffn.ndim == 1 and not keep_ffn[l]:
            out.append((f"{paths.layer(l)}.{paths.ffn_out}.bias", 0, np.arange(shape.hidden)))
    return out


def layer_neurons(keep_ffn: np.ndarray, l: int, ffn: int) -> np.ndarray:
    """The FFN neurons of layer `l` that a mask selects, per neuron (L, F) or per whole layer (L,)."""
    return np.flatnonzero(keep_ffn[l]) if keep_ffn.ndim == 2 else np.arange(ffn if keep_ffn[l] else 0)
