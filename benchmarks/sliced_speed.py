"""Sliced execution of a fixed ticket (protocol speed v1): the default encoder with a random ticket
removing half of its heads and FFN neurons, each ratio measured side by side in one run.

- training step (forward, backward, frozen slices, AdamW, the run's bf16 autocast where the CPU has it),
  batch 32: sliced vs gated (goal >= 1.6x) and vs the dense full model; `--seq-len 12` is CoLA's length;
  and sliced with the removed units' optimizer state frozen too (a single-task run freezes weights alone)
- evaluation forward, eval batch 128: sliced vs the dense model (and gated); goal >= 1.0x
- batch-1 forward of the physically pruned model vs dense, against the ideal layer-FLOPs speed-up
  (goal >= 70 % of it), exact widths and widths padded to a multiple of --block (zero placeholders)

    python benchmarks/sliced_speed.py [--sparsity 0.5] [--seq-len 64] [--repeats 7] [--threads N]
"""

from __future__ import annotations

import argparse
import copy
import dataclasses

import numpy as np
import torch

from common import random_batch, time_alternating, write_result
from mtl_tickets import registry, sliced
from mtl_tickets.config import DEFAULT_MODEL, TrainConfig
from mtl_tickets.encoders import load_encoder
from mtl_tickets.export import prune_encoder
from mtl_tickets.gates import EncoderShape, encoder_layers, module_paths
from mtl_tickets.importance import Scores
from mtl_tickets.masks import Ticket
from mtl_tickets.model import MultiTaskModel
from mtl_tickets.optim import FrozenSlices, build_optimizer
from mtl_tickets.pruning import levels, nested_tickets
from mtl_tickets.sharing import FixedTickets
from mtl_tickets.train import bf16_autocast, uses_bf16
from pruned_inference import layer_flops


def model_and_ticket(sparsity: float) -> tuple[MultiTaskModel, Ticket]:
    """The default encoder with an RTE head, and a random ticket (speed depends on counts, not choice)."""
    torch.manual_seed(0)
    model = MultiTaskModel(load_encoder(DEFAULT_MODEL), registry.resolve(["rte"]))
    shape = EncoderShape.of(model.encoder)
    flat = Scores(np.zeros((shape.layers, shape.heads)), np.zeros((shape.layers, shape.ffn)))
    return model, nested_tickets(flat, levels([sparsity], "units", shape, "neuron"), "random")[sparsity]


def training_step(model, ticket: Ticket, batch_size: int, seq_len: int) -> dict:
    """Seconds per step: gated and sliced with the recipe's default frozen slices (a single-task run's:
    the removed units' weights alone), sliced with their optimizer state frozen too (what a multi-task
    run does for units another task trains), and the dense full model (what a ticket run is weighed
    against), each under the run's autocast."""
    cfg = TrainConfig()
    optimizer = build_optimizer(model, cfg)
    frozen = FixedTickets({"rte": ticket}).frozen(model.encoder, "rte")
    with_state = [dataclasses.replace(s, with_state=True) for s in frozen]
    cut = sliced.SlicedTicket.of(model.encoder, ticket)
    how = {"dense": (None, []), "gated": (ticket.gates(), frozen), "sliced": (cut, frozen),
           "sliced_state_frozen": (cut, with_state)}
    batch = random_batch(batch_size, seq_len, labels=True)
    device = next(model.parameters()).device

    def step(mode: str) -> None:
        gates, freeze = how[mode]
        with sliced.through(model.encoder, gates), bf16_autocast(cfg, device):
            loss = model.loss(model(batch, "rte"), batch["labels"], "rte")
        loss.backward()
        with FrozenSlices(optimizer, freeze):
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    model.train()
    return {mode: (lambda mode=mode: step(mode)) for mode in how}


def forward(model, batch, how=None):
    def run() -> None:
        with torch.inference_mode(), sliced.through(model.encoder, how):
            model(batch, "rte")

    return run


def padded_ticket(ticket: Ticket, block: int) -> tuple[Ticket, np.ndarray]:
    """The ticket with each layer's kept FFN neurons padded up to a multiple of `block` by removed
    neurons, and a mask of those placeholders (their output columns are zeroed: the same outputs)."""
    ffn, placeholders = ticket.ffn.copy(), np.zeros_like(ticket.ffn)
    for l in range(ffn.shape[0]):
        extra = -int(ffn[l].sum()) % block
        chosen = np.flatnonzero(~ffn[l])[:extra]
        ffn[l, chosen] = placeholders[l, chosen] = True
    return Ticket(ticket.attn_heads, ffn), placeholders


def pruned_copy(dense: MultiTaskModel, ticket: Ticket, block: int) -> MultiTaskModel:
    padded, placeholders = padded_ticket(ticket, block)
    pruned = copy.deepcopy(dense)
    with torch.no_grad():
        ffn_out = module_paths(pruned.encoder).ffn_out
        for layer, extra in zip(encoder_layers(pruned.encoder), placeholders, strict=True):
            layer.get_submodule(ffn_out).weight[:, extra] = 0  # before slicing: placeholder neurons add nothing
    prune_encoder(pruned.encoder, padded)
    return pruned


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sparsity", type=float, default=0.5)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--eval-batch-size", type=int, default=128)
    parser.add_argument("--block", type=int, default=64, help="FFN width multiple of the padded pruned model")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model, ticket = model_and_ticket(args.sparsity)
    shape = EncoderShape.of(model.encoder)
    result = {}

    train = time_alternating(training_step(model, ticket, args.batch_size, args.seq_len), args.repeats)
    result["train_step"] = {"seconds": train, "examples_per_s": {m: args.batch_size / t["median"] for m, t in train.items()},
                            "speedup_sliced_vs_gated": train["gated"]["median"] / train["sliced"]["median"],
                            "speedup_sliced_vs_dense": train["dense"]["median"] / train["sliced"]["median"],
                            "speedup_weights_only_freeze": train["sliced_state_frozen"]["median"] / train["sliced"]["median"],
                            "bf16_autocast": uses_bf16(TrainConfig(), next(model.parameters()).device)}

    model.eval()
    batch = random_batch(args.eval_batch_size, args.seq_len)
    contenders = {"dense": forward(model, batch), "gated": forward(model, batch, ticket.gates()),
                  "sliced": forward(model, batch, sliced.SlicedTicket.of(model.encoder, ticket))}
    evals = time_alternating(contenders, args.repeats)
    result["evaluation"] = {"seconds": evals, **{f"speedup_{m}_vs_dense": evals["dense"]["median"] / evals[m]["median"]
                                                 for m in ("gated", "sliced")}}

    ideal = layer_flops(Ticket.full(shape), shape, args.seq_len) / layer_flops(ticket, shape, args.seq_len)
    one = random_batch(1, args.seq_len)
    pruned = {"exact": pruned_copy(model, ticket, 1), f"block{args.block}": pruned_copy(model, ticket, args.block)}
    single = time_alternating({"dense": forward(model, one), **{f"pruned_{k}": forward(m, one) for k, m in pruned.items()}},
                              args.repeats * 10)
    speedups = {k: single["dense"]["median"] / t["median"] for k, t in single.items() if k != "dense"}
    result["batch1_pruned"] = {"seconds": single, "ideal_speedup_layer_flops": ideal, "speedup": speedups,
                               "fraction_of_ideal": {k: (s - 1) / (ideal - 1) for k, s in speedups.items()}}

    seq = "" if args.seq_len == 64 else f"_seq{args.seq_len}"
    path = write_result(f"sliced_speed_threads{torch.get_num_threads()}{seq}", {
        "what": f"default encoder ({DEFAULT_MODEL}), random ticket removing {args.sparsity:.0%} of heads and FFN neurons, "
                f"seq {args.seq_len}; train batch {args.batch_size}, eval batch {args.eval_batch_size}, pruned batch 1",
        "repeats": args.repeats, **result,
        "goals": {"train sliced vs gated": ">= 1.6x", "eval sliced vs dense": ">= 1.0x", "batch-1 pruned": ">= 70 % of ideal"}})
    r = result
    print(f"train step sliced/gated {r['train_step']['speedup_sliced_vs_gated']:.2f}x, sliced/dense "
          f"{r['train_step']['speedup_sliced_vs_dense']:.2f}x | eval sliced/dense "
          f"{r['evaluation']['speedup_sliced_vs_dense']:.2f}x (gated {r['evaluation']['speedup_gated_vs_dense']:.2f}x) | "
          f"batch-1 pruned " + ", ".join(f"{k} {s:.2f}x" for k, s in speedups.items()) + f" of ideal {ideal:.2f}x | {path}")


if __name__ == "__main__":
    main()
