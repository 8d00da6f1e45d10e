"""The phase-transition sweep (protocol mini-GLUE v1): `mtl-tickets tickets find` per task.

Every finished cell's light files (results.json, config.yaml, tickets.json, metrics.jsonl) and each
task's importance scores are mirrored into benchmarks/results/phase_transition/ while the sweep
runs; they are restored into the run folder at start, so a committed cell is never trained again,
in this session or the next. The summary table is written from the finished tasks.

    python benchmarks/phase_transition.py --glue-dir ../shared/data/glue --tasks rte mrpc stsb cola
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

from common import mirror, run_mirrored

from mtl_tickets.tickets import winning_vs_full, write_curve

RESULTS = Path(__file__).parent / "results" / "phase_transition"
CONFIG = "configs/tickets_mini_glue.yaml"
PROTOCOL = "mini-GLUE v1"
TASKS = ("cola", "sst2", "mrpc", "stsb", "rte")


def run_task(task: str, glue_dir: str, runs: Path) -> list[str]:
    cmd = ["mtl-tickets", "tickets", "find", "--config", CONFIG, "--task", task, "--glue-dir", glue_dir,
           "--output-dir", str(runs / task), "--quiet"]
    run_mirrored(cmd, runs / task, RESULTS / task)
    return cmd


def summarize(tasks: list[str], commands: dict[str, str]) -> str:
    lines = [f"# Phase-transition sweep ({PROTOCOL})", "",
             f"Protocol: {PROTOCOL} (../shared/PROTOCOL.md). These v1 readings rest on 3 seeds; "
             "gaps inside seed noise are no detectable difference.", "",
             "Default encoder, FFN neuron granularity, `units` sparsity (that fraction of heads and of FFN neurons removed),",
             "best-epoch dev metric (the paper's selection). Seed 1 for the grid; the full model and the best winning",
             "ticket rerun with seeds 1, 2, 3 (mean ± std). `kept` is the fraction of encoder parameters kept.", ""]
    for task in tasks:
        ticket_file = RESULTS / task / "tickets.json"
        if not ticket_file.is_file():
            lines += unfinished(task)
            continue
        info = json.loads(ticket_file.read_text())["tickets"][task]
        rows = list(csv.DictReader((RESULTS / task / f"{task}_curve.csv").open()))
        full = next(float(r["dev_best"]) for r in rows if r["kind"] == "full")
        lines += [f"## {task} (dev score: {info['metric']})", "", f"Command: `{commands.get(task, '(see git history)')}`", "",
                  "| kind | sparsity | kept | dev best | dev last | vs full |", "|---|---|---|---|---|---|"]
        for r in rows:
            lines.append(f"| {r['kind']} | {r['sparsity']} | {float(r['kept']):.3f} | {r['dev_best']} | {r['dev_last']} | "
                         f"{float(r['dev_best']) - full:+.2f} |")
        conf = info.get("confirm") or {}
        lines += ["", f"Super ticket: **{info['kind']} at sparsity {info['sparsity']:g}**. {seed_reruns(conf)}",
                  "", paired_gain(conf), "", f"![{task}]({task}/{task}_curve.png)", ""]
    reading = RESULTS / "reading.md"  # the hand-written interpretation, kept across regenerations
    if reading.is_file():
        lines += [reading.read_text().rstrip()]
    return "\n".join(lines) + "\n"


def seed_reruns(confirm: dict) -> str:
    """Each rerun contender's mean ± std and scores over the confirm seeds, or that a sweep with
    `tickets.confirm_seeds: []` ran none."""
    if not confirm:
        return "No seed confirmation (tickets.confirm_seeds is empty)."
    return f"Seeds {confirm['full']['seeds']}: " + "; ".join(
        f"{confirmed_name(v)} {v['mean']:.2f} ± {v['std']:.2f} ({', '.join(f'{x:.2f}' for x in v['scores'])})"
        for v in confirm.values())


def paired_gain(confirm: dict) -> str:
    """The winning ticket minus the full model, seed by seed (same data order and head init), read
    against seed noise by the tools' paired statistics (mtl_tickets/stats.py)."""
    if "winning" not in confirm:
        return "No winning ticket was rerun."
    full, win = confirm["full"]["scores"], confirm["winning"]["scores"]
    gains = ", ".join(f"{w - f:+.2f}" for w, f in zip(win, full, strict=True))
    return f"Winning ticket minus full model, seed by seed: {gains}; {winning_vs_full(confirm)} ({len(win)} seeds)."


def confirmed_name(run: dict) -> str:
    return "full model" if run["kind"] == "full" else f"{run['kind']} ticket at {run['sparsity']:g}"


def unfinished(task: str) -> list[str]:
    """The cells of a task whose sweep has not finished yet: best and last dev score per run."""
    runs = sorted((RESULTS / task / task).glob("*-s*/results.json"))
    if not runs:
        return []
    lines = [f"## {task} (in progress: {len(runs)} runs finished)", "",
             "Dev score (the task's metrics averaged) per epoch; the table of the finished sweep replaces this.", "",
             "| run | epoch 1 | epoch 2 | epoch 3 | best |", "|---|---|---|---|---|"]
    for path in runs:
        history = json.loads(path.read_text())["history"]
        scores = [sum(sum(m.values()) / len(m) for m in h["tasks"][task].values()) / len(h["tasks"][task]) for h in history]
        lines.append(f"| {path.parent.name} | " + " | ".join(f"{x:.2f}" for x in scores) + f" | {max(scores):.2f} |")
    return lines + [""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--glue-dir", help="GLUE in its tsv layout (needed unless --summary-only)")
    parser.add_argument("--tasks", nargs="+", default=["rte", "mrpc", "stsb", "cola"], choices=TASKS)
    parser.add_argument("--runs", default="runs/phase_transition")
    parser.add_argument("--summary-only", action="store_true",
                        help="Redraw the curves and rewrite phase_transition.md from the results; train nothing.")
    args = parser.parse_args()
    if not (args.glue_dir or args.summary_only):
        parser.error("--glue-dir is required to run the sweep")
    runs = Path(args.runs)
    commands_file = RESULTS / "commands.json"
    commands = json.loads(commands_file.read_text()) if commands_file.is_file() else {}
    for task in [] if args.summary_only else args.tasks:
        if (RESULTS / task).is_dir():
            mirror(RESULTS / task, runs / task)  # restore committed cells: they are not trained again
        print(f"== {task}", file=sys.stderr, flush=True)
        commands[task] = " ".join(run_task(task, args.glue_dir, runs))
        commands_file.write_text(json.dumps(commands, indent=1))
        write_summary(commands)
    if args.summary_only:
        for ticket_file in RESULTS.glob("*/tickets.json"):
            task = ticket_file.parent.name
            write_curve(ticket_file.parent, task, json.loads(ticket_file.read_text())["tickets"][task])
        write_summary(commands)


def write_summary(commands: dict[str, str]) -> None:
    (RESULTS.parent / "phase_transition.md").write_text(summarize([t for t in TASKS if (RESULTS / t).is_dir()], commands))


if __name__ == "__main__":
    main()
