"""Pruned inference: dense vs masked vs physically pruned forward passes of the default encoder at
batch 1 and 32, against the ideal speed-up from FLOPs (protocol speed v1). Target: at least 80 % of
the ideal speed-up for the pruned model.

    python benchmarks/pruned_inference.py [--sparsity 0.5] [--repeats 20]
"""

from __future__ import annotations

import argparse

import torch

from common import dense_and_pruned, random_batch, time_alternating, write_result
from mtl_tickets import gates as gating
from mtl_tickets.gates import EncoderShape
from mtl_tickets.masks import Ticket


def layer_flops(ticket: Ticket, shape: EncoderShape, T: int) -> float:
    """Multiply-adds of the encoder layers per example: projections, attention, FFN."""
    d = shape.hidden // shape.heads
    heads = ticket.attn_heads.sum(axis=1)
    ffn = ticket.ffn.sum(axis=1) if ticket.ffn.ndim == 2 else ticket.ffn * shape.ffn
    per_layer = 4 * T * shape.hidden * heads * d + 2 * T * T * heads * d + 2 * T * shape.hidden * ffn
    return float(per_layer.sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sparsity", type=float, default=0.5)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    dense, pruned, ticket = dense_and_pruned(args.sparsity)
    shape = EncoderShape.of(dense.encoder)
    gates = ticket.gates()
    ideal = layer_flops(Ticket.full(shape), shape, args.seq_len) / layer_flops(ticket, shape, args.seq_len)
    results = {}
    for batch_size in (1, 32):
        batch = random_batch(batch_size, args.seq_len)

        def run(model, g=None, batch=batch):
            with torch.inference_mode(), gating.applied(model.encoder, g):
                model(batch, "rte")

        timing = time_alternating({"dense": lambda: run(dense), "masked": lambda: run(dense, gates),
                                   "pruned": lambda: run(pruned)}, args.repeats)
        speedup = timing["dense"]["median"] / timing["pruned"]["median"]
        results[f"batch_{batch_size}"] = {"seconds": timing, "speedup_pruned": speedup,
                                          "speedup_masked": timing["dense"]["median"] / timing["masked"]["median"],
                                          "fraction_of_ideal": (speedup - 1) / (ideal - 1) if ideal > 1 else None}
        print(f"batch {batch_size}: pruned {speedup:.2f}x, masked {results[f'batch_{batch_size}']['speedup_masked']:.2f}x, "
              f"ideal (layer FLOPs) {ideal:.2f}x")
    path = write_result("pruned_inference", {
        "what": f"forward pass, default encoder, winning ticket removing {args.sparsity:.0%} of heads and FFN neurons, seq {args.seq_len}",
        "baseline": "the dense model", "ideal_speedup_layer_flops": ideal, "repeats": args.repeats, **results,
        "target": "pruned speed-up >= 80 % of the ideal (fraction_of_ideal counts the speed-up above 1x)"})
    print(path)


if __name__ == "__main__":
    main()
