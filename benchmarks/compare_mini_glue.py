"""Shared vs task-specific tickets on protocol mini-GLUE v1: `mtl-tickets compare` on the five tasks.

Reuses the phase-transition sweep (benchmarks/phase_transition.py): its super tickets, merged into one
ticket set, and its own runs of the full model and the super ticket (seeds 1-3), so the single-task
contenders cost nothing more. Until every task's sweep has finished, only the joint full model
(MT-DNN) runs, which needs no ticket. Finished runs are mirrored into
benchmarks/results/compare_mini_glue/ and restored at start, so a committed run is never trained again.

    python benchmarks/compare_mini_glue.py --glue-dir ../shared/data/glue
    python benchmarks/compare_mini_glue.py --glue-dir ../shared/data/glue --seeds 1   # one seed of each first
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from common import mirror, run_mirrored
from phase_transition import RESULTS as SWEEP_RESULTS
from phase_transition import TASKS

RESULTS = Path(__file__).parent / "results"
CONFIG = "configs/compare_mini_glue.yaml"
ALL = ["single_full", "single_tickets", "joint_full", "joint_tickets", "joint_adaptive"]


def merged_tickets(runs: Path, out: Path) -> Path | None:
    """One ticket set from the finished sweeps (restored under runs/phase_transition), or None."""
    files = [runs / "phase_transition" / task / "tickets.json" for task in TASKS]
    if not all(f.is_file() for f in files):
        return None
    subprocess.run(["mtl-tickets", "tickets", "merge", *map(str, files), "--out", str(out)], check=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--glue-dir", required=True)
    parser.add_argument("--runs", default="runs")
    parser.add_argument("--contenders", nargs="+", choices=ALL, help="Default: all once every sweep has finished.")
    parser.add_argument("--seeds", nargs="+", type=int, help="Default: the config's (1 2 3). Fewer first gives every "
                        "contender a seed before any gets three.")
    args = parser.parse_args()
    runs = Path(args.runs)
    for task in TASKS:  # the sweep's runs: compare reads them instead of training them again
        if (SWEEP_RESULTS / task).is_dir():
            mirror(SWEEP_RESULTS / task, runs / "phase_transition" / task)
    out, results = runs / "compare_mini_glue", RESULTS / "compare_mini_glue"
    if results.is_dir():
        mirror(results, out)
    tickets = merged_tickets(runs, out / "super_tickets.json")
    contenders = args.contenders or (ALL if tickets else ["joint_full"])
    cmd = ["mtl-tickets", "compare", "--config", CONFIG, "--glue-dir", args.glue_dir, "--output-dir", str(out),
           "--set", f"compare.contenders=[{', '.join(contenders)}]", "--quiet"]
    if args.seeds:
        cmd += ["--set", f"compare.seeds=[{', '.join(map(str, args.seeds))}]"]
    if tickets:
        cmd += ["--tickets", str(tickets)]
    print(" ".join(cmd), file=sys.stderr, flush=True)
    run_mirrored(cmd, out, results)
    (results / "command.json").write_text(json.dumps({"command": " ".join(cmd), "protocol": "mini-GLUE v1"}, indent=1))


if __name__ == "__main__":
    main()
