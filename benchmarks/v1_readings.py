"""The numbers the mini-GLUE v1 readings quote, recomputed from committed results (issue #15 audit).

    python benchmarks/v1_readings.py

Reads only committed files: the phase-transition curves (<task>_curve.csv, seed 1) and the seed 1-3
reruns of the full model and the best winning ticket (<task>/tickets.json, `confirm`); the comparison
table (compare_mini_glue/comparison.csv, rebuilt unrounded from the runs' results.json and checked
against it); the joint_adaptive runs' config, sharing report and tickets; single_task_baselines.jsonl.
Every difference is paired by seed: mean, 95 % t interval over the seed differences, paired t-test p,
seeds ahead. A difference is one only when its interval excludes 0. Needs numpy, pandas, scipy, pyyaml.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from scipy import stats

RESULTS = Path(__file__).parent / "results"
SWEEP, COMPARE = RESULTS / "phase_transition", RESULTS / "compare_mini_glue"
TASKS = ["cola", "sst2", "mrpc", "stsb", "rte"]


def paired(a, b) -> str:
    """a minus b, seed by seed: mean, 95 % t interval, p, seeds ahead; the verdict the protocol allows."""
    d = np.asarray(a, float) - np.asarray(b, float)
    mean, n = d.mean(), len(d)
    if n < 2 or np.all(d == d[0]):
        return f"{mean:+.2f} (n {n}, no interval)"
    lo, hi = stats.t.interval(0.95, n - 1, loc=mean, scale=stats.sem(d))
    p = stats.ttest_rel(a, b).pvalue
    verdict = "difference" if lo > 0 or hi < 0 else "no detectable difference"
    return f"{mean:+.2f} (95 % CI [{lo:+.2f}, {hi:+.2f}], p {p:.3f}, {int((d > 0).sum())}/{n} ahead, n {n}): {verdict}"


def phase_transition() -> None:
    print("# Phase-transition sweep: dev best-epoch metric; super ticket selected on dev at seed 1")
    margins = []
    for task in TASKS:
        curve = pd.read_csv(SWEEP / task / f"{task}_curve.csv")
        info = json.loads((SWEEP / task / "tickets.json").read_text())["tickets"][task]
        full, win = info["confirm"]["full"], info["confirm"]["winning"]
        print(f"\n## {task}: super ticket {info['kind']} at {info['sparsity']}; best winning ticket {win['sparsity']}")
        print(f"  seeds {full['seeds']}: full {np.round(full['scores'], 2)}, winning {np.round(win['scores'], 2)}")
        print(f"  winning - full: {paired(win['scores'], full['scores'])}")
        print(f"  full model seed span {np.ptp(full['scores']):.2f}")
        w = curve[curve.kind == "winning"].set_index("sparsity").dev_best
        full1 = curve[curve.kind == "full"].dev_best.item()
        print(f"  seed 1: winning {w.min():.2f} to {w.max():.2f} (range {w.max() - w.min():.2f}), "
              f"minus full {w.min() - full1:+.2f} to {w.max() - full1:+.2f}; 0.4 -> 0.5 step {w[0.5] - w[0.4]:+.2f}")
        controls = curve[curve.kind.isin(["random", "losing"])]
        task_margins = [(w[r.sparsity] - r.dev_best, task, r.kind, r.sparsity) for r in controls.itertuples()]
        print(f"  seed 1: controls {controls.dev_best.min():.2f} to {controls.dev_best.max():.2f}; winning - control at the "
              f"same sparsity {min(task_margins)[0]:+.2f} to {max(task_margins)[0]:+.2f}: "
              + ", ".join(f"{k} {s} {m:+.2f}" for m, _, k, s in task_margins))
        margins += task_margins
        if task == "stsb":  # a damaged ticket still climbing at its last epoch
            run = json.loads((SWEEP / task / task / "random-0.3-s1" / "results.json").read_text())
            by_epoch = [np.mean(list(h["tasks"][task]["dev"].values())) for h in run["history"]]
            print(f"  seed 1: random 0.3 by epoch {np.round(by_epoch, 2)}")
        if task == "rte":  # accuracy in dev examples
            dev = json.loads((SWEEP / task / task / "full-s1" / "results.json").read_text())["dev_examples"][task]["dev"]
            gains = np.subtract(win["scores"], full["scores"]) * dev / 100
            print(f"  {dev} dev examples, one is {100 / dev:.2f} points; gain in examples, seed by seed: {np.round(gains, 2)}")
    lo, hi = min(margins), max(margins)
    print(f"\nwinning minus random/losing at the same sparsity, seed 1 (n 1, no interval): "
          f"{lo[0]:.2f} ({lo[1]} {lo[2]} {lo[3]}) to {hi[0]:.2f} ({hi[1]} {hi[2]} {hi[3]})")


def comparison_table() -> pd.DataFrame:
    """comparison.csv rebuilt from the unrounded run results (the committed v1 CSV rounds to 0.01), checked against it.

    Single-task contenders: the sweep's seed 1-3 reruns (a task whose super ticket is the full model
    reuses the full model's runs); joint contenders: each run's per-task best epoch or its one best
    checkpoint. A task's score is the mean of its metrics (MRPC F1/accuracy, STS-B Pearson/Spearman)."""
    sweep = {t: json.loads((SWEEP / t / "tickets.json").read_text())["tickets"][t] for t in TASKS}
    rows = []
    for rule, seed in [(r, s) for r in ("per_task", "checkpoint") for s in (1, 2, 3)]:
        for contender in ("single_full", "single_tickets"):
            pick = {t: "full" if contender == "single_full" or i["kind"] == "full" else "winning" for t, i in sweep.items()}
            scores = {t: sweep[t]["confirm"][pick[t]]["scores"][seed - 1] for t in TASKS}
            rows.append({"selection": rule, "contender": contender, "seed": seed, **scores,
                         "glue_average": np.mean(list(scores.values()))})
        for contender in ("joint_full", "joint_tickets", "joint_adaptive"):
            run = json.loads((COMPARE / contender / f"joint-s{seed}" / "results.json").read_text())
            metrics = {t: run["per_task_best"][t]["metrics"] if rule == "per_task" else run["best"]["tasks"][t] for t in TASKS}
            scores = {t: np.mean(list(m["dev"].values())) for t, m in metrics.items()}
            glue = np.mean(list(scores.values())) if rule == "per_task" else run["best"]["glue_average"]
            rows.append({"selection": rule, "contender": contender, "seed": seed, **scores, "glue_average": glue})
    raw = pd.DataFrame(rows).set_index(["selection", "contender", "seed"]).sort_index()
    csv = pd.read_csv(COMPARE / "comparison.csv").set_index(["selection", "contender", "seed"]).sort_index()
    worst = (raw - csv[raw.columns]).abs().max().max()
    assert worst <= 0.005 + 1e-9, f"run results disagree with comparison.csv by {worst:.4f}"
    return raw.reset_index()


def comparison() -> None:
    table = comparison_table()
    cols = TASKS + ["glue_average"]
    rules = {"per_task": "each task at its best dev epoch", "checkpoint": "one checkpoint, best dev GLUE average"}
    for rule, words in rules.items():
        t = table[table.selection == rule].set_index(["contender", "seed"]).sort_index()
        print(f"\n# Comparison, selection: {words}; single-task contenders: dev best epoch, super tickets selected on dev")
        pairs = [(c, "single_full") for c in ("single_tickets", "joint_full", "joint_tickets", "joint_adaptive")]
        pairs += [("joint_tickets", "joint_full"), ("joint_adaptive", "joint_tickets"), ("joint_adaptive", "joint_full")]
        pairs += [("single_tickets", c) for c in ("joint_full", "joint_tickets")]
        for a, b in pairs:
            print(f"\n## {a} - {b}")
            for col in cols:
                print(f"  {col:13s} {paired(t.loc[a][col], t.loc[b][col])}")
        means = t.groupby(level=0)[cols].mean()
        print("\n## highest mean per column:", {c: f"{means[c].idxmax()} {means[c].max():.2f}" for c in cols})
        print("## seed span (max - min) per contender:")
        print(t.groupby(level=0)[cols].agg(np.ptp).round(2).to_string())


def adaptive_sharing() -> None:
    print("\n# Adaptive sharing (joint_adaptive, seeds 1-3)")
    runs = sorted(COMPARE.glob("joint_adaptive/joint-s*"))
    cfg = yaml.safe_load((runs[0] / "config.yaml").read_text())["adaptive"]
    sigmoid = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
    print(f"  config {cfg}; affinity at the start sigmoid({cfg['affinity_init']:g}) = {sigmoid(cfg['affinity_init']):.3f}")
    print(f"  a unit's gate flips in a training step with probability sigmoid(-{cfg['scale']:g}) = "
          f"{sigmoid(-cfg['scale']):.3f} at the start (offsets 0, mtl_tickets/sharing.py)")
    need = cfg["scale"] / cfg["borrow"]
    print(f"  offsets at 0, a task takes up a unit it removed only if its affinities to the tasks keeping it "
          f"sum to more than {need:.3f} ({need / 4:.3f} each when all four others keep it)")
    for run in runs:
        result = json.loads((run / "results.json").read_text())
        tasks, aff = result["sharing"]["tasks"], np.array(result["sharing"]["affinity"])  # (K, K), diagonal 0
        off = aff[~np.eye(len(tasks), dtype=bool)]
        i, j = np.unravel_index(aff.argmax(), aff.shape)
        row = aff.sum(1).argmax()
        learned, start = _tickets(run / "learned_tickets.json"), _tickets(run / "tickets.json")
        changed = sum(len(_units(learned[t]) ^ _units(start[t])) for t in tasks)
        logged = (run / "results.json").read_text() + (run / "metrics.jsonl").read_text()
        print(f"  {run.name}: affinity {off.min():.3f} to {off.max():.3f} (max {tasks[i]} -> {tasks[j]}), "
              f"largest sum of one task's {aff.sum(1).max():.3f} ({tasks[row]}); units changed {changed}; "
              f"steps {result['steps']}; gate offsets logged: {'delta' in logged or 'offset' in logged}")


def _tickets(path: Path) -> dict:
    return json.loads(path.read_text())["tickets"]


def _units(ticket: dict) -> set[tuple]:
    return {(part, layer, unit) for part in ("attn_heads", "ffn") for layer, kept in ticket[part].items() for unit in kept}


def baselines() -> None:
    print("\n# Single-task baselines (seed 1 only, n 1): best-epoch dev metric, and epoch 1")
    for line in (RESULTS / "single_task_baselines.jsonl").read_text().splitlines():
        run = json.loads(line)
        best = {k: round(v, 2) for k, v in run["best"]["dev"].items()}
        first = {k: round(v, 2) for k, v in run["history"][0]["dev"].items()}
        print(f"  {run['key']:22s} best {best} (epoch {run['best_epoch']:g}); epoch 1 {first}")


if __name__ == "__main__":
    phase_transition()
    comparison()
    adaptive_sharing()
    baselines()
