"""Cost of per-task masks: one training step (forward, backward, AdamW) of the default encoder without
masks, with a ticket's gates, and with gates and frozen slices (the default `masked_updates: freeze`),
alternating on the same batch (protocol speed v1).
Target: under 3 % overhead.

    python benchmarks/mask_overhead.py [--repeats 20]
"""

from __future__ import annotations

import argparse

from common import default_model_and_ticket, random_batch, time_alternating, write_result
from mtl_tickets import gates as gating
from mtl_tickets.config import TrainConfig
from mtl_tickets.optim import FrozenSlices, build_optimizer
from mtl_tickets.sharing import FixedTickets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=64)
    args = parser.parse_args()
    model, ticket = default_model_and_ticket(0.3)
    gates = ticket.gates()
    optimizer = build_optimizer(model, TrainConfig())
    slices = FixedTickets({"rte": ticket}).frozen(model.encoder, "rte")
    batch = random_batch(args.batch_size, args.seq_len, labels=True)

    def step(gated: bool, frozen: bool) -> None:
        with FrozenSlices(optimizer, slices if frozen else []):
            with gating.applied(model.encoder, gates if gated else None):
                loss = model.loss(model(batch, "rte"), batch["labels"], "rte")
            loss.backward()
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    model.train()
    variants = {"unmasked": (False, False), "gates only": (True, False), "gates + frozen slices": (True, True)}
    timing = time_alternating({name: (lambda g=g, f=f: step(g, f)) for name, (g, f) in variants.items()}, args.repeats)
    base = timing["unmasked"]["median"]
    overhead = {name: t["median"] / base - 1 for name, t in timing.items() if name != "unmasked"}
    path = write_result("mask_overhead", {
        "what": "one training step of the default encoder, batch x seq as given, 30 % winning ticket (neuron granularity)",
        "baseline": "the same step without gates or frozen slices", "batch_size": args.batch_size, "seq_len": args.seq_len,
        "repeats": args.repeats, "seconds_per_step": timing, "overhead_median": overhead, "target": "< 3 %",
        "note": "`gates only` is train.masked_updates=optimizer; `gates + frozen slices` the default freeze"})
    print("overhead vs unmasked (median of %d): %s; %s" % (
        args.repeats, ", ".join(f"{k} {v:+.1%}" for k, v in overhead.items()), path))


if __name__ == "__main__":
    main()
