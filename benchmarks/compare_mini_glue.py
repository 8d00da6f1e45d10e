"""Shared vs task-specific tickets on protocol mini-GLUE v1: `mtl-tickets compare` on the five tasks.

Reuses the phase-transition sweep (benchmarks/phase_transition.py): its super tickets, merged into one
ticket set, and its own runs of the full model and the super ticket (its confirm seeds), so the
single-task contenders cost nothing more where the seeds match. Until every task's sweep has
finished, only the joint full model (MT-DNN) runs, which needs no ticket. Finished runs are mirrored
into benchmarks/results/compare_mini_glue/ and restored at start, so a committed run is never trained again.

    python benchmarks/compare_mini_glue.py --glue-dir ../shared/data/glue
    python benchmarks/compare_mini_glue.py --glue-dir ../shared/data/glue --seeds 1   # one seed of each first
    python benchmarks/compare_mini_glue.py --summary-only   # rewrite compare_mini_glue.md from the results
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from common import mirror, run_mirrored

from mtl_tickets.masks import TicketSet
from phase_transition import RESULTS as SWEEP_RESULTS
from phase_transition import TASKS

RESULTS = Path(__file__).parent / "results"
CONFIG = "configs/compare_mini_glue.yaml"
ALL = ["single_full", "single_tickets", "joint_full", "joint_tickets", "joint_adaptive"]
SUMMARY = RESULTS / "compare_mini_glue.md"


def merged_tickets(runs: Path, out: Path) -> Path | None:
    """One ticket set from the finished sweeps (restored under runs/phase_transition), or None."""
    files = [runs / "phase_transition" / task / "tickets.json" for task in TASKS]
    if not all(f.is_file() for f in files):
        return None
    subprocess.run(["mtl-tickets", "tickets", "merge", *map(str, files), "--out", str(out)], check=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--glue-dir", help="GLUE in its tsv layout (needed unless --summary-only)")
    parser.add_argument("--runs", default="runs")
    parser.add_argument("--contenders", nargs="+", choices=ALL, help="Default: all once every sweep has finished.")
    parser.add_argument("--seeds", nargs="+", type=int, help="Default: the config's (2-6). Fewer first gives every "
                        "contender a seed before any gets all.")
    parser.add_argument("--summary-only", action="store_true", help="Rewrite compare_mini_glue.md; train nothing.")
    args = parser.parse_args()
    if args.summary_only:
        return write_summary()
    if not args.glue_dir:
        parser.error("--glue-dir is required to run the comparison")
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
    write_summary()


def write_summary() -> None:
    """compare_mini_glue.md: the command, both tables, how far adaptive sharing moved, the reading."""
    results = RESULTS / "compare_mini_glue"
    command = json.loads((results / "command.json").read_text())
    lines = ["# Shared vs task-specific tickets (mini-GLUE v1)", "",
             f"Protocol: {command['protocol']} (../shared/PROTOCOL.md). These v1 readings rest on 3 seeds; "
             "gaps inside seed noise are no detectable difference.", "",
             "Default encoder; CoLA on all of its train set, SST-2, MRPC, STS-B and RTE on 2,000 examples each;",
             "3 epochs, lr 1e-4, batch 32, proportional task sampling for joint runs. Dev scores; MRPC and STS-B",
             "as the mean of their two metrics. `params/task` is the mean fraction of encoder-layer parameters a",
             "task runs through; `params stored` the encoder-layer parameters to keep, in full encoders.", "",
             f"Command: `{command['command']}`", "", (results / "comparison.md").read_text().rstrip(), "",
             "## How far adaptive sharing moved from the super tickets", "",
             "Units each task's learned ticket gained (+) and dropped (-) against its super ticket, per seed.", "",
             *adaptive_moves(results)]
    reading = results / "reading.md"  # the hand-written interpretation, kept across regenerations
    if reading.is_file():
        lines += ["", reading.read_text().rstrip()]
    SUMMARY.write_text("\n".join(lines) + "\n")


def adaptive_moves(results: Path, contender: str = "joint_adaptive") -> list[str]:
    """Learned tickets against the super tickets the run started from (its own copy, tickets.json)."""
    lines = []
    for learned_file in sorted(results.glob(f"{contender}/*/learned_tickets.json")):
        learned = TicketSet.load(learned_file).tickets
        super_tickets = TicketSet.load(learned_file.parent / "tickets.json").tickets
        if not lines:
            lines = ["| run | " + " | ".join(super_tickets) + " |", "|" + "---|" * (len(super_tickets) + 1)]
        cells = []
        for task, start in super_tickets.items():
            heads, ffn = ((getattr(learned[task], p), getattr(start, p)) for p in ("attn_heads", "ffn"))
            cells.append(f"heads +{(heads[0] & ~heads[1]).sum()}/-{(heads[1] & ~heads[0]).sum()}, "
                         f"FFN +{(ffn[0] & ~ffn[1]).sum()}/-{(ffn[1] & ~ffn[0]).sum()}")
        lines.append(f"| {learned_file.parent.name} | " + " | ".join(cells) + " |")
    return lines


if __name__ == "__main__":
    main()
