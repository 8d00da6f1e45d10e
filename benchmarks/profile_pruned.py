"""Where the time of a forward pass goes, dense vs physically pruned (protocol speed v1): the
profile behind benchmarks/results/pruned_inference.json. Prints torch.profiler's table of the ops
with the most CPU time and writes the totals by op kind.

    python benchmarks/profile_pruned.py [--batch-size 1] [--sparsity 0.5]
"""

from __future__ import annotations

import argparse
from collections import defaultdict

import torch
from torch.profiler import ProfilerActivity, profile

from common import dense_and_pruned, random_batch, write_result


def op_times(model, batch, runs: int = 10) -> tuple[dict[str, float], str]:
    """Self CPU milliseconds per op name over `runs` forward passes, and the printable table."""
    with torch.inference_mode():
        model(batch, "rte")
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(runs):
                model(batch, "rte")
    totals: dict[str, float] = defaultdict(float)
    for event in prof.key_averages():
        totals[event.key] += event.self_cpu_time_total / 1000 / runs
    return dict(totals), prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--sparsity", type=float, default=0.5)
    args = parser.parse_args()
    dense, pruned, _ = dense_and_pruned(args.sparsity)
    batch = random_batch(args.batch_size, args.seq_len)
    result = {}
    for name, model in (("dense", dense), ("pruned", pruned)):
        totals, table = op_times(model, batch)
        print(f"== {name}\n{table}")
        top = sorted(totals.items(), key=lambda kv: -kv[1])[:8]
        result[name] = {"total_ms": sum(totals.values()), "top_ops_ms": dict(top)}
    linear = {k: result[k]["top_ops_ms"].get("aten::addmm", 0.0) for k in result}
    path = write_result(f"profile_pruned_batch{args.batch_size}", {
        "what": f"self CPU time per forward pass by op, batch {args.batch_size}, seq {args.seq_len}, "
                f"{args.sparsity:.0%} of heads and FFN neurons removed", "baseline": "the dense model",
        **result, "addmm_ms": linear})
    print(path)


if __name__ == "__main__":
    main()
