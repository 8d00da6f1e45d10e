"""Pilot of adaptive sharing (issue #13) on three mini-GLUE v1 tasks whose super tickets remove units
(SST-2, STS-B, RTE: winning tickets at 10 %): a small grid over the score learning rate and the initial
margin, borrowing on and off, beside Tickets-Share on the same recipe and seed. Adam's step does not
depend on the gradient's scale, so scaling the margin and the learning rate together gives the same run:
only margin / lr matters (the grid checks it once, lr 0.01 margin 0.1 against lr 0.05 margin 0.5). Per cell: units flipped
per task, units taken from other tasks' tickets, dev scores. The defaults are chosen from it.

    python benchmarks/adaptive_pilot.py --glue-dir ../shared/data/glue

Seed 2 (the super tickets were selected on seed 1). One cell is one joint run of about 8 minutes on
2 cores; each finished cell is appended to benchmarks/results/adaptive_pilot.jsonl and skipped when the
script is rerun, and the table benchmarks/results/adaptive_pilot.md is rewritten from that file.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from common import RESULTS
from mtl_tickets.config import load_config
from mtl_tickets.metrics import task_score
from mtl_tickets.train import train

TICKETS = "benchmarks/results/compare_mini_glue/joint_tickets/joint-s1/tickets.json"  # the committed v1 super tickets
RECIPE = ["tasks=[sst2, stsb, rte]", "data.max_train_examples=2000", "train.epochs=3", "train.lr=1e-4",
          "train.batch_size=32", "train.sampler=proportional", "train.seed=2", f"tickets_file={TICKETS}"]
CELLS = {  # name -> overrides
    "adaptive lr 0.01 margin 0.5": ["sharing=adaptive", "adaptive.lr=0.01", "adaptive.margin=0.5"],
    "adaptive lr 0.05 margin 0.5": ["sharing=adaptive", "adaptive.lr=0.05", "adaptive.margin=0.5"],
    "adaptive lr 0.01 margin 0.1": ["sharing=adaptive", "adaptive.lr=0.01", "adaptive.margin=0.1"],
    "adaptive lr 0.05 margin 0.1": ["sharing=adaptive", "adaptive.lr=0.05", "adaptive.margin=0.1"],
    "adaptive lr 0.05 margin 0.5, borrowing off": ["sharing=adaptive", "adaptive.lr=0.05", "adaptive.margin=0.5",
                                                   "adaptive.borrow=false"],
    "tickets (Tickets-Share)": ["sharing=tickets"],
}
LOG = RESULTS / "adaptive_pilot.jsonl"


def run_cell(name: str, overrides: list[str], args: argparse.Namespace) -> dict:
    out = Path(args.work_dir) / name.replace(" ", "_").replace(",", "").replace("(", "").replace(")", "")
    cfg = load_config(None, [*RECIPE, *overrides, f"data.glue_dir={args.glue_dir}", f"output_dir={out}"])
    start = time.perf_counter()
    results = train(cfg).results
    per_task = {t: round(task_score(r["metrics"]), 2) for t, r in results["per_task_best"].items()}
    row = {"cell": name, "overrides": overrides, "seed": cfg.train.seed, "per_task_best": per_task,
           "average_per_task_best": round(statistics.mean(per_task.values()), 2),
           "average_best_checkpoint": round(results["best"]["glue_average"], 2), "minutes": round((time.perf_counter() - start) / 60, 1)}
    sharing = results["sharing"]
    if sharing:
        row["moved"] = {t: {p: {k: d[k] for k in ("gained", "dropped", "taken_from_others", "near_boundary", "jaccard_to_start")}
                            for p, d in parts.items()} for t, parts in sharing["per_task"].items()}
    return row


def write_table(rows: list[dict]) -> Path:
    tasks = list(rows[0]["per_task_best"])
    lines = ["# Adaptive sharing pilot (issue #13), protocol mini-GLUE v1 recipe on three tasks", "",
             "Command: `python benchmarks/adaptive_pilot.py --glue-dir ../shared/data/glue`. SST-2, STS-B, RTE (2,000 train",
             "examples each, full dev sets), 3 epochs, lr 1e-4, batch 32, proportional sampling, seed 2, the committed v1 super",
             "tickets (10 % of heads and FFN neurons removed for each of the three). One seed per cell (n = 1): dev differences",
             "between cells are not tested and can be seed noise. Flips: units a task gained against its super ticket (it",
             "drops as many); taken: of those, units another task's ticket keeps.", "",
             "| cell | " + " | ".join(tasks) + " | average (per-task best) | average (one checkpoint) | head flips | FFN flips "
             "| FFN taken | minutes |", "|" + "---|" * (len(tasks) + 7)]
    for r in rows:
        moved = r.get("moved", {})
        flips = {p: "/".join(str(moved[t][p]["gained"]) for t in tasks) if moved else "-" for p in ("attn_heads", "ffn")}
        taken = "/".join(str(moved[t]["ffn"]["taken_from_others"]) for t in tasks) if moved else "-"
        lines.append(f"| {r['cell']} | " + " | ".join(f"{r['per_task_best'][t]:.2f}" for t in tasks)
                     + f" | {r['average_per_task_best']:.2f} | {r['average_best_checkpoint']:.2f} | {flips['attn_heads']} "
                     f"| {flips['ffn']} | {taken} | {r['minutes']} |")
    lines += ["", f"Flips and taken are per task in the order {'/'.join(tasks)}; each task keeps 65 of 72 heads and 8,295",
              "of 9,216 FFN neurons. Minutes: the cell's wall time in its last call of the script (0.0: a run finished",
              "before a restart, reused).", "",
              "Reading (by hand, from these numbers): [adaptive_pilot_reading.md](adaptive_pilot_reading.md)."]
    path = RESULTS / "adaptive_pilot.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--glue-dir", required=True)
    parser.add_argument("--work-dir", default="runs/adaptive_pilot")
    args = parser.parse_args()
    done = [json.loads(line) for line in LOG.read_text().splitlines()] if LOG.is_file() else []
    for name, overrides in CELLS.items():
        if any(r["cell"] == name for r in done):
            continue
        done.append(run_cell(name, overrides, args))
        with LOG.open("a") as f:
            f.write(json.dumps(done[-1]) + "\n")
        print(write_table(done), flush=True)


if __name__ == "__main__":
    main()
