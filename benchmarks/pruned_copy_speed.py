"""A single-task ticket's training step (protocol speed v1): on a pruned working copy (`train.pruned_copy`)
against the sliced path it replaces and the full model, with oneDNN's primitive cache at its default
1,024 entries and at the package's (kernel_cache.py). The run's own `train_step` on one task's batches
(CoLA unless `--task`; 2,000 training examples elsewhere, as mini-GLUE), the default encoder, the v2
recipe, random-score winning tickets removing 30 % and 50 % of heads and FFN neurons.

Each cache setting runs in its own process (oneDNN reads the capacity once), the settings alternated over
the repeats. In a process the sessions run one after another, as a sweep's runs do: `--warmup` steps
unmeasured (the step compiles its matmul shapes as it meets them), then `--steps` timed. The sliced and
pruned-copy sessions of a ticket draw the same batches and dropout, so their losses should agree to
float rounding; the largest gap is reported.

    python benchmarks/pruned_copy_speed.py --glue-dir ../shared/data/glue [--task sst2] [--warmup 80] [--steps 50] [--repeats 1]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from common import default_model_and_ticket, write_result

from mtl_tickets import kernel_cache

SPARSITIES = (0.3, 0.5)
CACHES = {"default": "1024", "package": None}  # None: what importing mtl_tickets sets


def child(task: str, glue_dir: str, warmup: int, steps: int, work: Path) -> dict:
    """Seconds per step and losses of each session, one after another in this process."""
    from mtl_tickets import distributed, rundir
    from mtl_tickets.config import DEFAULT_MODEL, load_config
    from mtl_tickets.gates import EncoderShape
    from mtl_tickets.masks import TicketSet
    from mtl_tickets.train import start_session, train_step

    sessions = {"full": []}
    for sparsity in SPARSITIES:
        model, ticket = default_model_and_ticket(sparsity)
        path = work / f"ticket-{sparsity}.json"
        TicketSet(DEFAULT_MODEL, EncoderShape.of(model.encoder), {task: ticket}).save(path)
        del model
        for copy in ("false", "true"):
            sessions[f"{sparsity:.0%} {'pruned copy' if copy == 'true' else 'sliced'}"] = [
                "sharing=tickets", f"tickets_file={path}", f"train.pruned_copy={copy}"]
    out = {}
    for name, extra in sessions.items():
        cfg = load_config(None, [f"tasks=[{task}]", f"data.glue_dir={glue_dir}", f"output_dir={work / name.replace(' ', '-')}",
                                 "data.max_train_examples=2000", "data.max_train_examples_per_task={cola: 8551}",
                                 "train.epochs=10", "train.lr=5e-5", *extra])
        session = start_session(cfg, distributed.init(), rundir.prepare(cfg))
        losses = [train_step(session, task) for _ in range(warmup)]
        start = time.perf_counter()
        losses += [train_step(session, task) for _ in range(steps)]
        out[name] = {"s_per_step": (time.perf_counter() - start) / steps, "losses": losses}
        del session
    return {"capacity": os.environ.get(kernel_cache.VARIABLE), "sessions": out}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--glue-dir", required=True)
    parser.add_argument("--task", default="cola", help="a mini-GLUE task")
    parser.add_argument("--warmup", type=int, default=80, help="unmeasured steps per session")
    parser.add_argument("--steps", type=int, default=50, help="timed steps per session")
    parser.add_argument("--repeats", type=int, default=1, help="processes per cache setting")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.task, args.glue_dir, args.warmup, args.steps, Path(args.work))))
        return
    runs: dict[str, list[dict]] = {c: [] for c in CACHES}
    with tempfile.TemporaryDirectory() as work:
        for repeat in range(args.repeats):
            for cache, capacity in CACHES.items():
                env = {k: v for k, v in os.environ.items() if k not in kernel_cache.NAMES} | (
                    {kernel_cache.VARIABLE: capacity} if capacity else {})
                done = subprocess.run([sys.executable, __file__, "--child", "--glue-dir", args.glue_dir, "--task", args.task,
                                       "--warmup", str(args.warmup), "--steps", str(args.steps), "--work", f"{work}/{repeat}-{cache}"],
                                      capture_output=True, text=True, check=True, env=env)
                runs[cache].append(json.loads(done.stdout.strip().splitlines()[-1]))
                print(f"repeat {repeat + 1}/{args.repeats}, cache {cache} ({runs[cache][-1]['capacity']}): " + ", ".join(
                    f"{n} {s['s_per_step']:.3f}" for n, s in runs[cache][-1]["sessions"].items()), flush=True)
    names = list(runs["default"][0]["sessions"])
    seconds = {c: {n: [r["sessions"][n]["s_per_step"] for r in rs] for n in names} for c, rs in runs.items()}
    median = {c: {n: statistics.median(t) for n, t in by_name.items()} for c, by_name in seconds.items()}
    ratios = {c: {f"{s:.0%}": {"pruned copy vs sliced": m[f"{s:.0%} sliced"] / m[f"{s:.0%} pruned copy"],
                               "pruned copy vs full": m["full"] / m[f"{s:.0%} pruned copy"],
                               "sliced vs full": m["full"] / m[f"{s:.0%} sliced"]} for s in SPARSITIES}
              for c, m in median.items()}
    cache_gain = {n: median["default"][n] / median["package"][n] for n in names}
    gaps = {f"{s:.0%}": max(abs(a - b) for r in runs.values() for p in r
                            for a, b in zip(p["sessions"][f"{s:.0%} sliced"]["losses"], p["sessions"][f"{s:.0%} pruned copy"]["losses"],
                                            strict=True)) for s in SPARSITIES}
    path = write_result(f"pruned_copy_speed_{args.task}", {
        "what": f"train_step on {args.task} (batch 32, v2 recipe), default encoder: the full model and random-score winning "
                f"tickets at {', '.join(f'{s:.0%}' for s in SPARSITIES)}, sliced and on a pruned copy; sessions one after "
                f"another in a process, {args.warmup} steps unmeasured then {args.steps} timed; oneDNN's primitive cache at "
                f"1,024 (default) and at the package's capacity, each in its own process, {args.repeats} per setting",
        "threads": torch.get_num_threads(), "capacities": {c: runs[c][0]["capacity"] for c in CACHES},
        "seconds_per_step": seconds, "median": median, "speedup": ratios, "package_cache_vs_default": cache_gain,
        "largest_loss_gap_sliced_vs_pruned_copy": gaps,
    })
    for cache, by_sparsity in ratios.items():
        for key, r in by_sparsity.items():
            print(f"cache {cache}, {key}: pruned copy {r['pruned copy vs sliced']:.2f}x the sliced step, "
                  f"{r['pruned copy vs full']:.2f}x the full model's")
    print("package cache vs default: " + ", ".join(f"{n} {g:.2f}x" for n, g in cache_gain.items()) + f" | {path}")


if __name__ == "__main__":
    main()
