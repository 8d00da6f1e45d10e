"""Physically pruned export: a task's ticket becomes a smaller model that runs faster.

Removed heads and FFN neurons are sliced out of the Linear layers (`pruning.owned_slices` names the
same slices); the attention module infers its head count from the weight shapes, so each layer may
keep a different number of heads and FFN neurons. A layer left with no head or no FFN neuron keeps
one whose output weights are zero, which is exactly the masked model (and keeps shapes non-empty).

The folder holds `model.safetensors` (encoder + task head), the encoder's `config.json`, the
tokenizer, `ticket.json` and `export.json` (task, pooling, per-layer sizes); `load_exported(path)`
rebuilds it with one call.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from transformers import AutoConfig, AutoModel, PreTrainedTokenizerBase

from . import registry
from .checkpoint import load_weights, save_weights
from .gates import EncoderShape, encoder_layers, module_paths, unit_slices
from .masks import Ticket, TicketSet
from .model import MultiTaskModel
from .pruning import layer_neurons
from .schema import ConfigError

EXPORT_FILE = "export.json"


@dataclass
class ExportedModel:
    """A pruned single-task model, its tokenizer and the ticket it came from."""

    model: MultiTaskModel
    tokenizer: PreTrainedTokenizerBase
    ticket: Ticket
    task: str


def _slice_linear(linear: nn.Linear, index: torch.Tensor, dim: int) -> nn.Linear:
    """A new Linear keeping `index` along out (dim 0) or in (dim 1) features."""
    weight = linear.weight.detach().index_select(dim, index).clone()
    bias = linear.bias.detach().clone() if linear.bias is not None else None
    if dim == 0 and bias is not None:
        bias = bias.index_select(0, index)
    new = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None).to(weight.device, weight.dtype)
    with torch.no_grad():
        new.weight.copy_(weight)
        if bias is not None:
            new.bias.copy_(bias)
    return new


def _set(module: nn.Module, path: str, value: nn.Module) -> None:
    parent, _, name = path.rpartition(".")
    setattr(module.get_submodule(parent) if parent else module, name, value)


def layer_sizes(ticket: Ticket, shape: EncoderShape) -> list[dict[str, int]]:
    """Heads and FFN neurons each layer keeps after pruning (at least one of each)."""
    sizes = []
    for l in range(shape.layers):
        ffn = int(ticket.ffn[l].sum()) if ticket.ffn.ndim == 2 else (shape.ffn if ticket.ffn[l] else 0)
        sizes.append({"heads": max(1, int(ticket.attn_heads[l].sum())), "ffn": max(1, ffn)})
    return sizes


def prune_encoder(encoder: nn.Module, ticket: Ticket) -> None:
    """Slice the encoder in place to the units `ticket` keeps (the outputs equal the gated model's)."""
    shape = EncoderShape.of(encoder)
    paths = module_paths(encoder)
    for l, layer in enumerate(encoder_layers(encoder)):
        heads = np.flatnonzero(ticket.attn_heads[l])
        neurons = layer_neurons(ticket.ffn, l, shape.ffn)
        placeholder = np.array([0])  # keeps shapes non-empty; its output weights are zeroed below
        for path, dim, index in unit_slices(paths, shape, heads if heads.size else placeholder,
                                            neurons if neurons.size else placeholder):
            _set(layer, path, _slice_linear(layer.get_submodule(path), torch.as_tensor(index), dim))
        if not heads.size:
            layer.get_submodule(paths.attn_out).weight.data.zero_()
        if not neurons.size:
            ffn_out = layer.get_submodule(paths.ffn_out)
            ffn_out.weight.data.zero_()
            if ticket.ffn.ndim == 1:  # a masked FFN *layer* drops its output bias too: LayerNorm(attention output)
                ffn_out.bias.data.zero_()


def export(model: MultiTaskModel, task: str, ticket: Ticket, tokenizer: PreTrainedTokenizerBase, out_dir: Path, encoder_name: str) -> Path:
    """Write the pruned single-task model of `task` to `out_dir` (`model` itself is left as it is)."""
    if task not in model.task_heads:
        raise ConfigError(f"the model has no task {task!r}; it has {sorted(model.task_heads)}")
    shape = EncoderShape.of(model.encoder)
    single = MultiTaskModel(copy.deepcopy(model.encoder), [model.specs[task]], model.pooling).eval()
    single.task_heads[task].load_state_dict(model.task_heads[task].state_dict())
    prune_encoder(single.encoder, ticket)
    out_dir.mkdir(parents=True, exist_ok=True)
    single.encoder.config.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    save_weights(single, out_dir / "model.safetensors")
    TicketSet(encoder_name, shape, {task: ticket}).save(out_dir / "ticket.json")
    meta = {"task": task, "pooling": model.pooling, "layers": layer_sizes(ticket, shape), "encoder": encoder_name,
            "params": sum(p.numel() for p in single.encoder.encoder.parameters())}
    (out_dir / EXPORT_FILE).write_text(json.dumps(meta, indent=1))
    return out_dir


def load_exported(path: str | Path) -> ExportedModel:
    """Rebuild an exported model: the encoder from its config, resized per layer, then its weights."""
    path = Path(path)
    try:
        meta = json.loads((path / EXPORT_FILE).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ConfigError(f"{path} is not an mtl-tickets export ({EXPORT_FILE}: {err})") from None
    from transformers import AutoTokenizer

    config = AutoConfig.from_pretrained(path)
    encoder = AutoModel.from_config(config, attn_implementation="sdpa")
    ticket_set = TicketSet.load(path / "ticket.json")
    ticket = ticket_set.tickets[meta["task"]]
    prune_encoder(encoder, ticket)
    model = MultiTaskModel(encoder, [registry.all_tasks()[meta["task"]]], meta["pooling"]).eval()
    load_weights(model, path / "model.safetensors")
    return ExportedModel(model, AutoTokenizer.from_pretrained(path), ticket, meta["task"])


def format_export(path: Path) -> str:
    """One line on an exported folder: the units each layer kept and the encoder-layer parameters."""
    meta = json.loads((Path(path) / EXPORT_FILE).read_text())
    heads = "/".join(str(layer["heads"]) for layer in meta["layers"])
    ffn = "/".join(str(layer["ffn"]) for layer in meta["layers"])
    return (f"exported {meta['task']} to {path}: heads per layer {heads}, FFN per layer {ffn}, "
            f"{meta['params']:,} encoder-layer parameters")


def export_run(run_dir: str | Path, task: str, out_dir: str | Path, tickets_file: str | Path | None = None) -> Path:
    """Export one task of a finished run through the ticket it trained with (or `tickets_file`)."""
    from .encoders import load_tokenizer
    from .inference import load_run

    run_dir, out_dir = Path(run_dir), Path(out_dir)
    cfg, model = load_run(run_dir)
    shape = EncoderShape.of(model.encoder)
    if tickets_file is None:  # what the run evaluates through: its ticket, its learned ticket, or everything
        ticket = model.sharing.ticket(task) or Ticket.full(shape)
    else:
        tickets = TicketSet.load(Path(tickets_file), expect=shape).tickets
        if task not in tickets:
            raise ConfigError(f"{tickets_file} has no ticket for {task!r}; it has {sorted(tickets)}")
        ticket = tickets[task]
    return export(model, task, ticket, load_tokenizer(cfg.model.name), out_dir, cfg.model.name)
