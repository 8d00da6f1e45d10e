"""Gates on attention heads and FFN units, installed on any BERT-family encoder by hooks.

transformers 5 removed `head_mask`, so the model is never edited (PEFT style): a hook multiplies a
submodule's activation by a gate tensor, whatever its origin (a binary ticket, ones that require grad
for importance scores, or the sharing module's relaxed gates). DESIGN.md decision 1:

- attention head h of layer l: the input of `attention.output.dense`, viewed (B, T, H, d), times g[l, h]
- FFN neuron j of layer l: the intermediate activation (B, T, F), times g[l, j]
- whole FFN layer l: the output of `output.dense` (B, T, D), times g[l], so a masked layer gives
  `LayerNorm(attention_output)` as in the reference code.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

# Where the gated submodules sit, per `config.model_type`; a new encoder family is a row.
MODULE_PATHS: dict[str, dict[str, str]] = {
    family: {
        "layers": "encoder.layer",
        "attn_out": "attention.output.dense",
        "ffn_act": "intermediate",
        "ffn_out": "output.dense",
    }
    for family in ("bert", "roberta", "xlm-roberta", "electra", "camembert")
}

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


def module_paths(encoder: nn.Module) -> dict[str, str]:
    model_type = encoder.config.model_type
    if model_type not in MODULE_PATHS:
        raise ValueError(
            f"no gate mapping for encoder family {model_type!r}; add a row to gates.MODULE_PATHS "
            f"(known: {', '.join(sorted(MODULE_PATHS))})"
        )
    return MODULE_PATHS[model_type]


def encoder_layers(encoder: nn.Module) -> list[nn.Module]:
    return list(encoder.get_submodule(module_paths(encoder)["layers"]))


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
                module = layer.get_submodule(paths["attn_out"])
                handles.append(module.register_forward_pre_hook(_head_hook(gates.attn_heads, l, observer)))
            if gates.ffn is not None and gates.ffn.dim() == 2:
                module = layer.get_submodule(paths["ffn_act"])
                handles.append(module.register_forward_hook(_output_hook(gates.ffn, l, "ffn", observer)))
            elif gates.ffn is not None:
                module = layer.get_submodule(paths["ffn_out"])
                handles.append(module.register_forward_hook(_output_hook(gates.ffn, l, "ffn", observer)))
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


def _output_hook(gate: torch.Tensor, layer: int, kind: str, observer: Observer | None):
    def hook(module: nn.Module, args: tuple, out: torch.Tensor) -> torch.Tensor:
        gated = out * gate[layer].to(out.device, out.dtype)  # (B, T, F) per neuron, or (B, T, D) by one scalar
        if observer is not None:
            observer(kind, layer, gated)
        return gated

    return hook
