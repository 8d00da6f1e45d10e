"""A single-task ticket run on a pruned working copy (`train.pruned_copy`, protocol speed v1) against the
sliced path it replaces and the full model: the run's own training step (`train_step` on CoLA's
batches, the default encoder, the v2 recipe) for tickets removing 30 % and 50 % of heads and FFN
neurons. All sessions live in one process and take turns, `--steps` steps at a time, so the machine's
drift falls on each alike; each turn restores its session's own random state, so every session draws its
dropout as a run alone would. The sliced and pruned-copy runs of a ticket start from the same weights
and draw the same batches and dropout, so their losses should agree to float rounding; the largest gap
is reported.

    python benchmarks/pruned_copy_speed.py --glue-dir ../shared/data/glue [--steps 10] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from common import default_model_and_ticket, write_result

SPARSITIES = (0.3, 0.5)


def sessions(glue_dir: str, work: Path) -> dict:
    """The full model, then per sparsity its ticket sliced and on a pruned copy, each a fresh run."""
    from mtl_tickets import distributed, rundir
    from mtl_tickets.config import DEFAULT_MODEL, load_config
    from mtl_tickets.gates import EncoderShape
    from mtl_tickets.masks import TicketSet
    from mtl_tickets.train import start_session

    def start(name: str, *extra: str):
        cfg = load_config(None, ["tasks=[cola]", f"data.glue_dir={glue_dir}", f"output_dir={work / name}",
                                 "train.epochs=10", "train.lr=5e-5", *extra])
        return start_session(cfg, distributed.init(), rundir.prepare(cfg))

    out = {"full": start("full")}
    for sparsity in SPARSITIES:
        model, ticket = default_model_and_ticket(sparsity)
        path = work / f"ticket-{sparsity}.json"
        TicketSet(DEFAULT_MODEL, EncoderShape.of(model.encoder), {"cola": ticket}).save(path)
        del model
        for copy in ("false", "true"):
            name = f"{sparsity:.0%} {'pruned copy' if copy == 'true' else 'sliced'}"
            out[name] = start(name.replace(" ", "-"), "sharing=tickets", f"tickets_file={path}", f"train.pruned_copy={copy}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--glue-dir", required=True)
    parser.add_argument("--steps", type=int, default=10, help="steps per turn")
    parser.add_argument("--repeats", type=int, default=5, help="turns per session")
    args = parser.parse_args()
    from mtl_tickets.train import train_step

    with tempfile.TemporaryDirectory() as work:
        runs = sessions(args.glue_dir, Path(work))
        seconds = {name: [] for name in runs}
        losses = {name: [] for name in runs}
        rng = {name: torch.get_rng_state() for name in runs}  # as each run's start leaves it: seeded alike

        def turn(name: str, steps: int) -> None:
            torch.set_rng_state(rng[name])
            losses[name].extend(train_step(runs[name], "cola") for _ in range(steps))
            rng[name] = torch.get_rng_state()

        for name in runs:  # warm-up, unmeasured
            turn(name, 3)
        for repeat in range(args.repeats):
            for name in runs:
                start = time.perf_counter()
                turn(name, args.steps)
                seconds[name].append((time.perf_counter() - start) / args.steps)
            print(f"turn {repeat + 1}/{args.repeats}: " + ", ".join(f"{n} {t[-1]:.3f}" for n, t in seconds.items()), flush=True)
    median = {name: statistics.median(t) for name, t in seconds.items()}
    ratios, gaps = {}, {}
    for sparsity in SPARSITIES:
        sliced, copy = f"{sparsity:.0%} sliced", f"{sparsity:.0%} pruned copy"
        ratios[f"{sparsity:.0%}"] = {"pruned copy vs sliced": median[sliced] / median[copy],
                                     "full vs pruned copy": median["full"] / median[copy],
                                     "full vs sliced": median["full"] / median[sliced]}
        gaps[f"{sparsity:.0%}"] = max(abs(a - b) for a, b in zip(losses[sliced], losses[copy], strict=True))
    path = write_result("pruned_copy_speed", {
        "what": f"train_step on CoLA (batch 32, v2 recipe), default encoder: the full model and random-score winning tickets "
                f"at {', '.join(f'{s:.0%}' for s in SPARSITIES)} sliced and on a pruned copy; one process, sessions taking "
                f"turns of {args.steps} steps, {args.repeats} turns each after 3 unmeasured steps",
        "threads": torch.get_num_threads(), "seconds_per_step": seconds, "median": median, "speedup": ratios,
        "largest_loss_gap_sliced_vs_pruned_copy": gaps,
    })
    for key, r in ratios.items():
        print(f"{key}: pruned copy {r['pruned copy vs sliced']:.2f}x the sliced step; "
              f"full model / pruned copy {r['full vs pruned copy']:.2f}; largest loss gap {gaps[key]:.2e}")
    print(path)


if __name__ == "__main__":
    main()
