"""Adaptive sharing against Tickets-Share on the five mini-GLUE tasks (issue #13's comparison).

Protocol mini-GLUE v1's recipe (v2's convergence check has not run), the committed v1 super tickets
(selected on seed 1, so never confirmed on it), the defaults of `adaptive` chosen by the pilot. The
main pair (joint_tickets, joint_adaptive) takes seeds 2-6; the controls that tell learning from noise
(random swaps as many as the learned run made, learn-then-fix, borrowing off) take seeds 2-4, beside
the main pair's runs of the same seeds: the budget demands it (one five-task joint run measured 14
minutes through fixed tickets and 17 with adaptive sharing on 2 cores, so 10 main + 9 control runs are
about 5 CPU hours). A table pairs the controls against joint_adaptive itself (their runs again). Learn-then-fix,
the one control ahead of Tickets-Share on every seed of 2-4, then takes seeds 5-6 too, so its lead is read at n = 5
with two seeds that did not prompt the follow-up.

    python benchmarks/adaptive_compare.py --glue-dir ../shared/data/glue
    python benchmarks/adaptive_compare.py --summary-only   # rewrite adaptive_compare.md; train nothing

Seed by seed, the main pair first. Finished runs are mirrored into benchmarks/results/adaptive_compare/
and restored at start, so a committed run is never trained again and a killed one resumes from its
checkpoint where runs/ survives (a fresh machine starts it again); after every seed the tables are rewritten.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from common import RESULTS, mirror, run_mirrored
from compare_mini_glue import CONFIG, adaptive_moves

# The v1 super tickets. Paths as written go into every run's config, and a run is resumed or reused
# only under the same config: so relative ones, from the repository root (also pass --glue-dir relative).
TICKETS = Path("benchmarks/results/compare_mini_glue/joint_tickets/joint-s1/tickets.json")
MAIN = ["joint_tickets", "joint_adaptive"]
CONTROLS = [*MAIN, "joint_random_swaps", "joint_learned_fixed", "joint_adaptive_no_borrow"]
# "learning" trains nothing: the controls' runs again, paired against joint_adaptive instead of joint_tickets
# (does the learned run beat as many random swaps, borrowing off, and retraining through what it learned?)
LEARNING = ["joint_adaptive", "joint_random_swaps", "joint_adaptive_no_borrow", "joint_learned_fixed"]
PHASES = {"main": (MAIN, [2, 3, 4, 5, 6]), "controls": (CONTROLS, [2, 3, 4]), "learning": (LEARNING, [2, 3, 4]),
          "learned_fixed": (["joint_tickets", "joint_learned_fixed"], [2, 3, 4, 5, 6])}
OUT = RESULTS / "adaptive_compare"
SUMMARY = RESULTS / "adaptive_compare.md"
PROTOCOL = ("mini-GLUE v1 recipe, seeds 2-6 (main pair, learn-then-fix) and 2-4 (the other controls), "
            "super tickets selected on seed 1")


def compare(phase: str, seeds: list[int], glue_dir: str, runs: Path) -> str:
    """One `mtl-tickets compare` over the phase's contenders and `seeds` (finished runs are reused),
    its tables named <phase>_comparison.* beside the mirrored runs."""
    contenders = PHASES[phase][0]
    cmd = ["mtl-tickets", "compare", "--config", CONFIG, "--glue-dir", glue_dir, "--output-dir", str(runs),
           "--tickets", str(TICKETS), "--set", f"compare.contenders=[{', '.join(contenders)}]",
           "--set", f"compare.seeds=[{', '.join(map(str, seeds))}]", "--set", f"compare.table={phase}_comparison",
           "--quiet"]
    print(" ".join(cmd), file=sys.stderr, flush=True)
    run_mirrored(cmd, runs, OUT)
    return " ".join(cmd)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--glue-dir", help="GLUE in its tsv layout (needed unless --summary-only)")
    parser.add_argument("--runs", default="runs/adaptive_compare")
    parser.add_argument("--summary-only", action="store_true", help="Rewrite adaptive_compare.md; train nothing.")
    args = parser.parse_args()
    if not args.summary_only:  # the summary is rewritten after every seed
        if not args.glue_dir:
            parser.error("--glue-dir is required to run the comparison")
        runs = Path(args.runs)
        if OUT.is_dir():
            mirror(OUT, runs)
        record = OUT / "command.json"  # a restart keeps the commands of the phases it has not reached yet
        commands = json.loads(record.read_text())["commands"] if record.is_file() else {}
        for phase, (_, seeds) in PHASES.items():
            for i in range(len(seeds)):
                commands[phase] = compare(phase, seeds[: i + 1], args.glue_dir, runs)
                record.write_text(json.dumps({"protocol": PROTOCOL, "commands": commands}, indent=1))
                write_summary()
    else:
        write_summary()


def write_summary() -> None:
    """adaptive_compare.md: the commands, both tables, how far the learned tickets moved, the reading."""
    commands = json.loads((OUT / "command.json").read_text())["commands"]
    lines = ["# Adaptive sharing vs Tickets-Share (mini-GLUE v1 recipe)", "",
             f"Protocol: {PROTOCOL} (../shared/PROTOCOL.md). Default encoder; CoLA on all of its train set, SST-2,",
             "MRPC, STS-B and RTE on 2,000 examples each; 3 epochs, lr 1e-4, batch 32, proportional task sampling;",
             "`adaptive` at its defaults (margin 0.5, lr 0.05, warm-up and cool-down 10 %, borrowing on). Dev",
             "scores; MRPC and STS-B as the mean of their two metrics. The controls take 3 seeds, not 5: the budget;",
             "learn-then-fix, ahead on seeds 2-4, takes seeds 5-6 as well (its own table).", ""]
    for phase, (contenders, _) in PHASES.items():
        table = OUT / f"{phase}_comparison.md"
        if table.is_file():
            lines += [f"## {phase.replace('_', ' ').capitalize()}: {', '.join(contenders)}", "", f"Command: `{commands[phase]}`", "",
                      ("\n" + table.read_text()).replace("\n## ", "\n### ").strip(), ""]
    for contender in ("joint_adaptive", "joint_adaptive_no_borrow"):
        moves = adaptive_moves(OUT, contender)
        if moves:
            lines += [f"## How far {contender} moved from the super tickets", "",
                      "Units each task's learned ticket gained (+) and dropped (-) against its super ticket, per seed.", "",
                      *moves, ""]
    reading = OUT / "reading.md"  # the hand-written interpretation, kept across regenerations
    if reading.is_file():
        lines += [reading.read_text().rstrip(), ""]
    SUMMARY.write_text("\n".join(lines))


if __name__ == "__main__":
    main()
