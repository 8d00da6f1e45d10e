"""Gates on attention heads and FFN units, installed on any BERT-family encoder by hooks.

transformers 5 removed `head_mask`, so the model is never edited (PEFT style): a hook multiplies a
submodule's activation by a gate tensor, whatever its origin (a binary ticket, ones that require grad
for importance scores, or the sharing module's relaxed gates). DESIGN.md decision 1:

- attention head h of layer l: the input of `attention.output.dense`, viewed (B, T, H, d), times g[l, h]
- FFN neuron j of layer l: the intermediate activation (B, T, F), the input of `output.dense`, times g[l, j]
- whole FFN layer l: the output of `output.dense` (B, T, D), times g[l], so a masked layer gives
  `LayerNorm(attention_output)` as in the reference code.

`MODULE_PATHS` lists those Linear layers and the query, key and value projections once per encoder
family; pruning (the slices a unit owns) and export (slicing them out) read the same table.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

@dataclass(frozen=True)
class ModulePaths:
    """Where an encoder family keeps the Linear layers its units own, relative to one layer.

    Head h owns rows h*d..(h+1)*d of query, key and value (with their biases) and those columns of
    attn_out; FFN neuron j owns row j of ffn_in (with its bias) and column j of ffn_out. Gates act on
    what these layers read: a head's on the input of attn_out, a neuron's on the input of ffn_out,
    a whole FFN layer's on the output of ffn_out.
    """

    layers: str  # the list of layers, relative to the encoder
    query: str
    key: str
    value: str
    attn_out: str  # attention output projection
    ffn_in: str  # FFN intermediate projection
    ffn_out: str  # FFN output projection

    def layer(self, l: int) -> str:
        """The path of layer `l` relative to the encoder."""
        return f"{self.layers}.{l}"


BERT_PATHS = ModulePaths(
    layers="encoder.layer",
    query="attention.self.query",
    key="attention.self.key",
    value="attention.self.value",
    attn_out="attention.output.dense",
    ffn_in="intermediate.dense",
    ffn_out="output.dense",
)

# The one table of unit paths per `config.model_type` (gates, pruning and export read it); a new
# encoder family is a row.
MODULE_PATHS: dict[str, ModulePaths] = {family: BERT_PATHS for family in ("bert", "roberta", "xlm-roberta", "electra", "camembert")}

# One Linear slice that units own: (module path relative to a layer, dim, indices); dim 0 selects
# output rows and their bias entries, dim 1 input columns.
LinearSlice = tuple[str, int, np.ndarray]

# Called with (unit kind, layer, gated activation) so importance scores can attach gradient hooks.
Observer = Callable[[str, int, torch.Tensor], None]


@dataclass(frozen=True)
class EncoderShape:
    """The unit counts of an encoder: layers, heads per layer, FFN neurons per layer."""

    layers: int
    heads: int
    ffn: int
    hidden: int

    @classmethod
    def of(cls, encoder: nn.Module) -> EncoderShape:
        c = encoder.config
        return cls(c.num_hidden_layers, c.num_attention_heads, c.intermediate_size, c.hidden_size)


@dataclass
class Gates:
    """Multiplicative gates, 1 = keep. Either part may be None (not gated).

    Attributes:
        attn_heads: (L, H).
        ffn: (L, F) for `neuron` granularity, or (L,) for `layer` granularity.
    """

    attn_heads: torch.Tensor | None = None
    ffn: torch.Tensor | None = None

    @property
    def ffn_granularity(self) -> str | None:
        if self.ffn is None:
            return None
        return "neuron" if self.ffn.dim() == 2 else "layer"

    @classmethod
    def ones(cls, shape: EncoderShape, ffn_granularity: str = "neuron", requires_grad: bool = False) -> Gates:
        ffn_shape = (shape.layers, shape.ffn) if ffn_granularity == "neuron" else (shape.layers,)
        return cls(
            attn_heads=torch.ones(shape.layers, shape.heads, requires_grad=requires_grad),
            ffn=torch.ones(ffn_shape, requires_grad=requires_grad),
        )


def module_paths(encoder: nn.Module) -> ModulePaths:
    model_type = encoder.config.model_type
    if model_type not in MODULE_PATHS:
        raise ValueError(
            f"no gate mapping for encoder family {model_type!r}; add a row to gates.MODULE_PATHS "
            f"(known: {', '.join(sorted(MODULE_PATHS))})"
        )
    return MODULE_PATHS[model_type]


def encoder_layers(encoder: nn.Module) -> list[nn.Module]:
    return list(encoder.get_submodule(module_paths(encoder).layers))


def unit_slices(paths: ModulePaths, shape: EncoderShape, heads: np.ndarray, neurons: np.ndarray) -> list[LinearSlice]:
    """The slices of one layer's Linear layers that the given attention heads and FFN neurons own."""
    d = shape.hidden // shape.heads
    cols = (np.asarray(heads)[:, None] * d + np.arange(d)).ravel()  # (heads * d,)
    head_slices = [(paths.query, 0, cols), (paths.key, 0, cols), (paths.value, 0, cols), (paths.attn_out, 1, cols)]
    neuron_slices = [(paths.ffn_in, 0, neurons), (paths.ffn_out, 1, neurons)]
    return (head_slices if len(heads) else []) + (neuron_slices if len(neurons) else [])


def check_shape(gates: Gates, shape: EncoderShape) -> None:
    if gates.attn_heads is not None and tuple(gates.attn_heads.shape) != (shape.layers, shape.heads):
        raise ValueError(f"head gates have shape {tuple(gates.attn_heads.shape)}, encoder has {(shape.layers, shape.heads)}")
    if gates.ffn is not None:
        want = (shape.layers, shape.ffn) if gates.ffn.dim() == 2 else (shape.layers,)
        if tuple(gates.ffn.shape) != want:
            raise ValueError(f"FFN gates have shape {tuple(gates.ffn.shape)}, encoder wants {want}")


@contextlib.contextmanager
def applied(encoder: nn.Module, gates: Gates | None, observer: Observer | None = None) -> Iterator[None]:
    """Gate the encoder inside the block; the hooks are always removed on exit."""
    if gates is None or (gates.attn_heads is None and gates.ffn is None):
        yield
        return
    check_shape(gates, EncoderShape.of(encoder))
    paths = module_paths(encoder)
    handles = []
    try:
        for l, layer in enumerate(encoder_layers(encoder)):
            if gates.attn_heads is not None:
                module = layer.get_submodule(paths.attn_out)
                handles.append(module.register_forward_pre_hook(_head_hook(gates.attn_heads, l, observer)))
            if gates.ffn is not None:
                module = layer.get_submodule(paths.ffn_out)
                if gates.ffn.dim() == 2:
                    handles.append(module.register_forward_pre_hook(_neuron_hook(gates.ffn, l, observer)))
                else:
                    handles.append(module.register_forward_hook(_ffn_layer_hook(gates.ffn, l, observer)))
        yield
    finally:
        for handle in handles:
            handle.remove()


def _head_hook(gate: torch.Tensor, layer: int, observer: Observer | None):
    def hook(module: nn.Module, args: tuple) -> tuple:
        x = args[0]  # (B, T, H*d): per-head attention outputs, concatenated
        H = gate.shape[1]
        heads = x.unflatten(-1, (H, -1)) * gate[layer].to(x.device, x.dtype)[:, None]  # (B, T, H, d)
        if observer is not None:
            observer("attn_heads", layer, heads)
        return (heads.flatten(-2), *args[1:])

    return hook


def _neuron_hook(gate: torch.Tensor, layer: int, observer: Observer | None):
    def hook(module: nn.Module, args: tuple) -> tuple:
        gated = args[0] * gate[layer].to(args[0].device, args[0].dtype)  # (B, T, F): the intermediate activation
        if observer is not None:
            observer("ffn", layer, gated)
        return (gated, *args[1:])

    return hook


def _ffn_layer_hook(gate: torch.Tensor, layer: int, observer: Observer | None):
    def hook(module: nn.Module, args: tuple, out: torch.Tensor) -> torch.Tensor:
        gated = out * gate[layer].to(out.device, out.dtype)  # (B, T, D), by one scalar
        if observer is not None:
            observer("ffn", layer, gated)
        return gated

    return hook
