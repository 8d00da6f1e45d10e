"""The protocol grid in unattended, resumable calls (../shared/PROTOCOL.md: mini-GLUE v2, then GLUE-full v1),
on the GPU machine or, a session at a time, on this CPU.

Each stage is one existing recipe (`mtl-tickets compare`, `tickets find`) in a subprocess. Stages start in
priority order as soon as the stages they read have finished, `--workers` at a time (MiniLM-L6 leaves an
H200 mostly idle, so a few processes share it; on 2 CPU cores, one). No stage starts in the last
`--reserve-minutes` of `--budget-minutes`; at the budget (or when the grid itself gets SIGTERM or Ctrl-C)
the running ones get SIGTERM (the run in progress saves a checkpoint, every finished run stays); with
`--between-runs`, a stage is stopped as soon as it finishes a run inside that reserve or when a run as
long as its longest so far would not end before the budget, and a stage is not started when a run as long
as the longest its folder records (from any call) would not, so no run is begun that the budget cuts off
(unless the folder records none yet). Everything lands under --out ($OUT) while the grid runs, so a cut-off
call still returns what it finished:

    runs/        the light files of every finished run (results, config, tickets, curves, tables)
    cells.jsonl  one line per finished run: its tasks, seed, recipe and best-epoch dev scores
    grid.jsonl   one line per stage event (start, done, failed, stopped, skipped) with its time
    recipe.json  the budget and learning rate mini-GLUE v2's step 1 chose, with the numbers it read
    logs/        each stage's output
    summary.md   the stages, their status, time and training steps per second

On the GPU machine, from the repository root (nothing to install; `gpu_carry/` from benchmarks/gpu_carry.py
carried along, the encoder as fp16 and the GLUE files):

    PYTHONPATH=. python benchmarks/protocol_grid.py --budget-minutes 8.5 --workers 4

A later call continues where one stopped when the earlier $OUT is carried back (`--resume-from`).
On this CPU, mini-GLUE v2 only, one session's worth at a time into a committed folder (run directories
stay in runs/, so a stopped run resumes from its checkpoint where runs/ survives; on a fresh machine
only finished runs carry over, hence `--between-runs`; the reserve keeps a new stage from starting where
its first run, CoLA's ticket runs at about 13 minutes, could not finish):

    python benchmarks/protocol_grid.py --protocols v2 --no-adaptive --workers 1 --budget-minutes 150 \
        --reserve-minutes 14 --between-runs \
        --model minilm-l6 --glue-dir ../shared/data/glue --out benchmarks/results/v2_grid \
        --resume-from benchmarks/results/v2_grid

What fits (an estimate, not a measurement: grid.jsonl's steps_per_s replaces it after the first call).
mini-GLUE's five train sets are 520 batches of 32 an epoch (CoLA 268, the others 63 each). At 3 epochs
v2 is about 116k training steps in 297 runs: step 1 (budget at 3/6/10 epochs and the second lr, seeds
1-2) 23k steps in 40 runs; the dev-selected sweeps (12 cells at seed 1, full and best winning at seeds
2-6) 34k in 110; the three joint contenders at seeds 2-6 23k in 15 (adaptive sharing's three controls as
many again); the paper-shaped sweep on MRPC 4k in 22; the held-out-selected sweeps 31k in 110.
A step of MiniLM-L6 is about 85 GFLOP (batch 32 x ~40 tokens x 65 MFLOP per token, measured on the CPU),
under a millisecond of H200 compute, so it is bound by kernel launches and Python: assumed 12 ms
(85 steps/s) per process, plus about 5 s per run (load, three evaluations, checkpoints) and 10 s per
stage (start-up). One process would need about 45 minutes for v2. With 4 workers the critical path
(budget at 10 epochs 3 min, lr 1.5 min, CoLA's sweep 5.3 min, a joint contender 2 min) is about 12 min:
one 8.5-minute call should finish step 1 and the sweeps of SST-2, MRPC, STS-B and RTE; CoLA's sweep,
the comparison, the held-out sweeps and GLUE-full (seven tasks, 12k steps a seed) take further calls.
Step 1 chose 10 epochs, which makes everything after it 3.3 times those 3-epoch figures.
On 2 CPU cores, measured at 10 epochs: the full model's single-task runs take 520 s (CoLA), 160 (SST-2),
355 (MRPC), 250 (STS-B) and 470 (RTE), 29 minutes for the five. A ticket run is assumed to cost three
quarters of its full run where sentences are long (sliced training keeps 50-90 % of the units; MRPC's
sweep measured the gain), but on CoLA, whose sentences are short, it measured 1.8 times it (0.27 against
0.15 s a step). From the sweeps on, v2 was then about 23 CPU hours, ten sessions: the dev-selected
sweeps 10.4 hours (per task 6 full and 16 ticket runs; CoLA's alone 4.3), the held-out-selected sweeps
6.9, Tickets-Share and MT-DNN at seeds 2-6 4.5 (a joint run about as long as the five single-task runs)
and the paper-shaped sweep on MRPC 1.3. Two exact speed-ups then cut it to about 20 hours (speed.md):
a single-task ticket run freezes its removed units' weights alone, not their Adam moments (CoLA's
ticket runs now take 0.20 s a step, 1.35 times the full run's), and `train.keep_freed_memory` makes every
step 6-13 % faster. Ticket runs were still slower than full ones (SST-2's 0.25-0.30 s a step against
0.16): oneDNN's kernel cache thrashed on their many matmul shapes. With a larger cache (kernel_cache.py)
and a single-task ticket trained as a pruned working copy (`train.pruned_copy`), a ticket step is
1.05-1.14 times faster than the full model's (speed.md). With CoLA's dev sweep done, the rest came to
about 18 hours: the other four dev sweeps 6.4 (6 full runs and 16 ticket runs at about 0.9 of a full run
each), the held-out sweeps 6.6 (on 90 % of train, 6 full and 10 ticket runs a task), Tickets-Share and
MT-DNN about 4 (joint runs stay sliced; the cache helps them too) and the MRPC paper-shaped sweep 1.2.
Cut, as no claim reads them: the random and losing controls of the
held-out and paper-shaped sweeps (claim (c) reads the dev-selected sweeps' controls; 2.5 hours), and
adaptive sharing and its controls (`--no-adaptive`; issue #13 ran them at v1's recipe).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from itertools import pairwise
from pathlib import Path

from common import machine, mirror

V2, FULL = "mini-GLUE v2", "GLUE-full v1"
PROTOCOLS = ("v2", "glue-full")  # --protocols: their stages
MINI_GLUE = ("cola", "sst2", "mrpc", "stsb", "rte")
GLUE_FULL = ("cola", "sst2", "mrpc", "stsb", "mnli", "qnli", "rte")  # QQP: the local copy has no dev set
BUDGETS = (3, 6, 10)  # v2 step 1: epochs of the full model; the schedule spans them, so each is its own run
PAPER_SHAPE_TASK = "mrpc"  # #15: the paper's own sweep shape on one task (its phase transition shows on MRPC)
LRS = (1e-4, 5e-5)  # v2 step 1: the first is the budget runs' (v1's choice), the second is tried at the chosen budget
SELECTION_SEEDS, CONFIRM_SEEDS, GLUE_FULL_SEEDS = [1, 2], [2, 3, 4, 5, 6], [1, 2, 3, 4, 5]
JOINT = ("joint_full", "joint_tickets", "joint_adaptive")
ADAPTIVE_CONTROLS = ("joint_adaptive_no_borrow", "joint_learned_fixed", "joint_random_swaps")  # issue #13; read joint_adaptive's runs
REPO = Path(__file__).resolve().parents[1]


@dataclass
class Grid:
    """Where the grid reads and writes, and what every command gets."""

    runs: Path  # run directories (large: weights, checkpoints)
    out: Path  # what comes back: light files only
    model: str
    glue_dir: Path
    tasks: list[str]  # mini-GLUE v2's tasks
    overrides: list[str] = field(default_factory=list)  # `--set` for every command (tiny CPU runs)

    def command(self, *args: str) -> list[str]:
        """A CLI command; the grid's own `--set`s come last, so they win over a stage's."""
        sets = [x for o in self.overrides for x in ("--set", o)]
        return [sys.executable, "-m", "mtl_tickets.cli", *args, "--glue-dir", str(self.glue_dir), "--model", self.model,
                "--quiet", *sets]

    def event(self, stage: str, event: str, **extra) -> None:
        line = {"t": round(time.time(), 1), "stage": stage, "event": event, **extra}
        with (self.out / "grid.jsonl").open("a") as f:
            f.write(json.dumps(line) + "\n")
        print(json.dumps(line), flush=True)


@dataclass(frozen=True)
class Stage:
    name: str
    needs: tuple[str, ...]  # stages whose results it reads
    args: Callable[[Grid], list[str] | None]  # its command; None when its inputs are missing


# ------------------------------------------------------------------------------- mini-GLUE v2


def v2_compare(grid: Grid, out: str, epochs: float, lr: float, contenders: list[str], seeds: list[int],
               table: str = "comparison") -> list[str]:
    return grid.command("compare", "--config", "configs/compare_mini_glue.yaml", "--task", ",".join(grid.tasks),
                        "--output-dir", str(grid.runs / "v2" / out), "--epochs", f"{epochs:g}", "--lr", f"{lr:g}",
                        "--set", f"compare.contenders=[{', '.join(contenders)}]", "--set", f"compare.seeds={seeds}",
                        "--set", f"compare.table={table}")


def budget_args(epochs: int, grid: Grid) -> list[str]:
    return v2_compare(grid, f"budget-e{epochs}", epochs, LRS[0], ["single_full"], SELECTION_SEEDS)


def lr_args(grid: Grid) -> list[str] | None:
    scores = budget_scores(grid)
    if scores is None:
        return None
    epochs = chosen_epochs(scores)
    return v2_compare(grid, f"lr{LRS[1]:g}-e{epochs}", epochs, LRS[1], ["single_full"], SELECTION_SEEDS)


def seed_glue_averages(table: Path, contender: str, selection: str = "per_task", column: str = "glue_average") -> dict[int, float]:
    """A contender's GLUE average (or a task's score: `column`) per seed under one of compare's selection
    rules (`per_task`: each task at its best epoch; `checkpoint`: a joint run's one best checkpoint), from
    its table; {} if absent."""
    if not table.is_file():
        return {}
    rows = [r for r in csv.DictReader(table.open()) if r["selection"] == selection and r["contender"] == contender]
    return {int(r["seed"]): float(r[column]) for r in rows}


def glue_averages(table: Path) -> list[float] | None:
    """The single-task full model's GLUE average per seed, or None before its table is written."""
    return list(seed_glue_averages(table, "single_full").values()) or None


def budget_scores(grid: Grid) -> dict[int, list[float]] | None:
    """GLUE average per seed at each budget (lr 1e-4), once every budget stage has written its table."""
    scores = {e: glue_averages(grid.runs / "v2" / f"budget-e{e}" / "comparison.csv") for e in BUDGETS}
    return None if any(v is None for v in scores.values()) else scores


def budget_bar(scores: dict[int, list[float]]) -> float:
    """The GLUE average a budget must reach: the largest budget's mean less half its seed-std."""
    top = scores[BUDGETS[-1]]
    return statistics.mean(top) - 0.5 * (statistics.stdev(top) if len(top) > 1 else 0.0)


def chosen_epochs(scores: dict[int, list[float]]) -> int:
    """v2 step 1: the smallest budget whose mean is within half a seed-std of the largest budget's."""
    return next(e for e in BUDGETS if statistics.mean(scores[e]) >= budget_bar(scores))


def chosen_recipe(grid: Grid) -> tuple[int, float] | None:
    """(epochs, lr) for every later v2 run, written to recipe.json with the numbers behind it."""
    scores = budget_scores(grid)
    if scores is None:
        return None
    epochs = chosen_epochs(scores)
    by_lr = {LRS[0]: scores[epochs], LRS[1]: glue_averages(grid.runs / "v2" / f"lr{LRS[1]:g}-e{epochs}" / "comparison.csv")}
    if by_lr[LRS[1]] is None:
        return None
    lr = max(LRS, key=lambda x: statistics.mean(by_lr[x]))
    (grid.out / "recipe.json").write_text(json.dumps({
        "protocol": V2, "epochs": epochs, "lr": lr, "rule": "smallest budget within half a seed-std of the largest; "
        "then the lr with the higher mean", "glue_average_by_epochs_at_lr_1e-4": scores,
        "glue_average_by_lr": {f"{k:g}": v for k, v in by_lr.items()}, "seeds": SELECTION_SEEDS}, indent=1))
    return epochs, lr


def sweep_args(task: str, select_on: str, grid: Grid, paper_shape: bool = False) -> list[str] | None:
    """A super-ticket sweep at the chosen recipe; `paper_shape`: the paper's grid (10 % of heads with
    one whole FFN layer per step) instead of FFN neurons. Only the dev-selected neuron sweep trains the
    random and losing controls: claim (c) reads them there, and no claim reads another sweep's."""
    recipe = chosen_recipe(grid)
    if recipe is None:
        return None
    held = ["--set", "tickets.select_on=heldout", "--set", "data.holdout=0.1"] if select_on == "heldout" else []
    shape = ["--ffn-granularity", "layer", "--sparsity-mode", "paired"] if paper_shape else []
    with_controls = select_on == "dev" and not paper_shape
    kinds = ["--set", "tickets.control_sparsities=[0.1, 0.3, 0.5]"] if with_controls else ["--set", "tickets.kinds=[winning]"]
    folder = f"sweep-{select_on}-paper" if paper_shape else f"sweep-{select_on}"
    return grid.command("tickets", "find", "--config", "configs/tickets_mini_glue.yaml", "--task", task,
                        "--output-dir", str(grid.runs / "v2" / folder / task),
                        "--epochs", str(recipe[0]), "--lr", f"{recipe[1]:g}", *held, *shape, *kinds,
                        "--set", f"tickets.confirm_seeds={CONFIRM_SEEDS}")


def compare_args(contenders: list[str], grid: Grid) -> list[str] | None:
    """The contenders on the confirmation seeds, through the dev-selected super tickets (merged once); a
    stage of one contender names its tables after it (stages share the run folder, so its runs)."""
    table = f"comparison_{contenders[0]}" if len(contenders) == 1 else "comparison"
    recipe = chosen_recipe(grid)
    if recipe is None:
        return None
    if contenders == ["joint_full"]:  # MT-DNN needs no ticket
        return v2_compare(grid, "compare", *recipe, contenders, CONFIRM_SEEDS, table)
    sweeps = [grid.runs / "v2" / "sweep-dev" / t / "tickets.json" for t in grid.tasks]
    if not all(f.is_file() for f in sweeps):
        return None
    merged = grid.runs / "v2" / "super_tickets.json"
    if not merged.is_file():
        from mtl_tickets.masks import TicketSet, merge

        merge([(f, TicketSet.load(f)) for f in sweeps]).save(merged)
    return v2_compare(grid, "compare", *recipe, contenders, CONFIRM_SEEDS, table) + ["--tickets", str(merged)]


# ------------------------------------------------------------------------------- GLUE-full v1


def glue_full_args(seed: int, grid: Grid) -> list[str] | None:
    """The joint full model on every task the carried GLUE has train and dev for, v1's recipe, one seed."""
    if not all((grid.glue_dir / d).is_dir() for d in ("MNLI", "QNLI", "SST-2")):
        return None  # not carried: benchmarks/gpu_carry.py --tasks ... mnli qnli
    return grid.command("compare", "--config", "configs/glue_full_gpu.yaml", "--task", ",".join(GLUE_FULL),
                        "--output-dir", str(grid.runs / "glue-full"), "--lr", "1e-4", "--set", "model.pooling=mean",
                        "--set", "compare.contenders=[joint_full]", "--set", f"compare.seeds=[{seed}]")


def stages(tasks: list[str], protocols: list[str], adaptive: bool = True) -> list[Stage]:
    """The grid in priority order: v2 step 1, the dev-selected sweeps and their comparison (with adaptive
    sharing and its controls unless `adaptive` is off), the paper-shaped sweep, the held-out-selected
    sweeps, then GLUE-full one seed at a time."""
    budget = [Stage(f"v2-budget-e{e}", (), partial(budget_args, e)) for e in BUDGETS]
    lr = Stage("v2-lr", tuple(s.name for s in budget), lr_args)
    dev = [Stage(f"v2-sweep-dev-{t}", (lr.name,), partial(sweep_args, t, "dev")) for t in tasks]
    contenders = [*JOINT, *ADAPTIVE_CONTROLS] if adaptive else [c for c in JOINT if c != "joint_adaptive"]
    joint = [Stage(f"v2-compare-{c}", (lr.name,) if c == "joint_full" else tuple(s.name for s in dev),
                   partial(compare_args, [c])) for c in contenders if c in JOINT]
    controls = [Stage(f"v2-compare-{c}", ("v2-compare-joint_adaptive",), partial(compare_args, [c]))
                for c in contenders if c in ADAPTIVE_CONTROLS]
    table = Stage("v2-compare", tuple(s.name for s in [*joint, *controls]),
                  partial(compare_args, ["single_full", "single_tickets", *contenders]))
    paper = [Stage(f"v2-sweep-dev-paper-{t}", (lr.name,), partial(sweep_args, t, "dev", paper_shape=True))
             for t in tasks if t == PAPER_SHAPE_TASK]
    held = [Stage(f"v2-sweep-heldout-{t}", (lr.name,), partial(sweep_args, t, "heldout")) for t in tasks]
    full = [Stage(f"glue-full-s{s}", (), partial(glue_full_args, s)) for s in GLUE_FULL_SEEDS]
    v2 = [*budget, lr, *dev, *joint, *controls, table, *paper, *held]
    return (v2 if "v2" in protocols else []) + (full if "glue-full" in protocols else [])


# ------------------------------------------------------------------------------- running


@dataclass
class Running:
    stage: Stage
    proc: subprocess.Popen
    started: float
    out_dir: Path  # where its runs are (its --output-dir)
    stopped_at: float | None = None  # when it was sent SIGTERM
    runs_seen: int | None = None  # finished runs under out_dir at the last look (the first look counts earlier calls')
    run_ends: list[float] = field(default_factory=list)  # when each run this call finished was seen

    def finished_a_run(self) -> bool:
        """Whether a run of this stage finished since the last look (noting when)."""
        done = sum(1 for _ in self.out_dir.rglob("results.json"))
        finished = self.runs_seen is not None and done > self.runs_seen
        if finished:
            self.run_ends.append(time.time())
        self.runs_seen = done
        return finished

    def longest_run(self) -> float:
        """The longest a run of this stage takes: the most training time any of its runs recorded, in any
        call, or the longest this call waited for one to finish, counted from the stage's start (so start-up
        and the work between runs are in it)."""
        waited = [b - a for a, b in pairwise([self.started, *self.run_ends])]
        return max([longest_recorded(self.out_dir), *waited])


def longest_recorded(out_dir: Path) -> float:
    """The most training time a finished run under `out_dir` recorded (a run resumed from a checkpoint
    carries its earlier time); 0 where none has finished. Stages that share a folder share this. Runs
    from before results.json recorded `seconds` count as 0: unknown, not long."""
    return max((json.loads(p.read_text()).get("seconds", 0.0) for p in out_dir.rglob("results.json")), default=0.0)


def run_grid(grid: Grid, todo: list[Stage], workers: int, stop_at: float, reserve: float, between_runs: bool = False,
             every: float = 15) -> dict[str, str]:
    """Start ready stages in priority order until `reserve` seconds before `stop_at`; SIGTERM what still
    runs at `stop_at` or, with `between_runs`, a stage as soon as it finishes a run after which the next
    would not fit (`next_run_fits`). Returns each stage's final status."""
    status: dict[str, str] = {}
    running: dict[str, Running] = {}
    last_mirror = time.time()
    budget_at = stop_at

    def stop_now(*_) -> None:  # SIGTERM or Ctrl-C to the grid: the budget ends now, recorded as it would be
        nonlocal stop_at
        stop_at = min(stop_at, time.time())

    previous = {sig: signal.signal(sig, stop_now) for sig in (signal.SIGTERM, signal.SIGINT)}
    while todo or running:
        for name, r in list(running.items()):
            if r.proc.poll() is not None:
                status[name] = finish(grid, r)
                del running[name]
        todo = skip_blocked(grid, todo, status, set(running))
        while len(running) < workers and time.time() < stop_at - reserve and (stage := next_ready(todo, status)):
            todo.remove(stage)
            started = start(grid, stage, stop_at if between_runs else math.inf)
            if started is None:
                status[stage.name] = "skipped"
            else:
                running[stage.name] = started
        if time.time() >= stop_at - reserve and not running:
            for stage in todo:
                grid.event(stage.name, "skipped", why="budget")
                status[stage.name] = "skipped"
            todo = []
        if time.time() >= stop_at:
            stop(running.values())
        elif between_runs:
            stop([r for r in running.values()
                  if r.stopped_at or (r.finished_a_run() and not next_run_fits(r, time.time(), stop_at, reserve))])
        if time.time() - last_mirror >= every:
            mirror(grid.runs, grid.out / "runs")
            last_mirror = time.time()
        time.sleep(0.2 if running else 0)
    for sig, handler in previous.items():
        signal.signal(sig, handler)
    if stop_at < budget_at:
        grid.event("grid", "stopped", why="a signal")
    return status


def next_run_fits(r: Running, now: float, stop_at: float, reserve: float) -> bool:
    """With `--between-runs`, after a stage finishes a run: go on only outside the reserve window and when
    a run as long as its longest so far would end before the budget (a run cut off is lost where runs/ is)."""
    return now < stop_at - reserve and now + r.longest_run() < stop_at


def stop(running) -> None:
    """SIGTERM at the budget (a run saves a checkpoint and exits); SIGKILL a minute later."""
    for r in running:
        if r.stopped_at is None:
            r.proc.send_signal(signal.SIGTERM)
            r.stopped_at = time.time()
        elif time.time() - r.stopped_at > 60:
            r.proc.kill()


def next_ready(todo: list[Stage], status: dict[str, str]) -> Stage | None:
    return next((s for s in todo if all(status.get(n) == "done" for n in s.needs)), None)


def skip_blocked(grid: Grid, todo: list[Stage], status: dict[str, str], running: set[str]) -> list[Stage]:
    """Stages that need one that failed, stopped, was skipped or is not in this grid can never run:
    skip them now."""
    kept, pending = [], {s.name for s in todo} | running
    for stage in todo:
        lost = [n for n in stage.needs if status.get(n) != "done" and n not in pending]
        if lost:
            grid.event(stage.name, "skipped", why=f"needs {', '.join(lost)}")
            status[stage.name] = "skipped"
        else:
            kept.append(stage)
    return kept


def start(grid: Grid, stage: Stage, stop_at: float) -> Running | None:
    """The stage's command in a subprocess; not started when its inputs are missing or broken, or when a
    run as long as the longest its folder records would not end by `stop_at` (`--between-runs`)."""
    try:
        cmd = stage.args(grid)
    except Exception as err:  # a broken input of one stage must not end the unattended grid
        grid.event(stage.name, "skipped", why=f"{type(err).__name__}: {err}")
        return None
    if cmd is None:
        grid.event(stage.name, "skipped", why="its inputs are missing")
        return None
    out_dir = Path(cmd[cmd.index("--output-dir") + 1])
    if time.time() + (longest := longest_recorded(out_dir)) >= stop_at:
        grid.event(stage.name, "skipped", why=f"budget: its folder's longest run, {longest / 60:.0f} min, would not end before it")
        return None
    log = (grid.out / "logs" / f"{stage.name}.log").open("w")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
           "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=env)
    grid.event(stage.name, "start", command=" ".join(cmd[1:]))
    return Running(stage, proc, time.time(), out_dir)


def finish(grid: Grid, r: Running) -> str:
    """Record a stage that ended: its status, time, and the runs it finished (as cells)."""
    mirror(grid.runs, grid.out / "runs")
    cells = record_cells(grid, r.stage.name, grid.out / "runs" / r.out_dir.relative_to(grid.runs))
    seconds = time.time() - r.started
    steps = sum(c["steps"] for c in cells)
    state = "done" if r.proc.returncode == 0 else "stopped" if r.stopped_at else "failed"
    grid.event(r.stage.name, state, rc=r.proc.returncode, seconds=round(seconds, 1), runs=len(cells), steps=steps,
               steps_per_s=round(steps / seconds, 2))
    return state


def record_cells(grid: Grid, stage: str, where: Path) -> list[dict]:
    """Append every finished run under `where` (mirrored) not yet in cells.jsonl to it, one line each."""
    from mtl_tickets.metrics import task_score

    path = grid.out / "cells.jsonl"
    seen = {json.loads(line)["run"] for line in path.open()} if path.is_file() else set()
    cells = []
    for results_file in sorted(where.rglob("results.json")):
        run = str(results_file.parent.relative_to(grid.out / "runs"))
        if run in seen:
            continue
        results = json.loads(results_file.read_text())
        train = results["config"]["train"]
        cells.append({"run": run, "stage": stage, "tasks": results["tasks"], "seed": train["seed"],
                      "sharing": results["config"]["sharing"], "epochs": train["epochs"], "lr": train["lr"],
                      "best": {t: round(task_score(b["metrics"]), 2) for t, b in results["per_task_best"].items()},
                      "glue_average_best_checkpoint": round(results["best"]["glue_average"], 2),
                      "steps": results["steps"], "complete": results["complete"]})
    with path.open("a") as f:
        f.writelines(json.dumps(c) + "\n" for c in cells)
    return cells


def write_summary(grid: Grid, budget_minutes: float, workers: int) -> None:
    """summary.md: every stage's last event, from grid.jsonl."""
    last = {}
    for line in (grid.out / "grid.jsonl").open():
        event = json.loads(line)
        last[event["stage"]] = event
    lines = [f"# Protocol grid ({V2}, then {FULL})", "", f"Budget {budget_minutes:g} min, {workers} workers; "
             "steps/s is per stage (stages share the machine; grid.jsonl names it per call).", "",
             "| stage | status | seconds | finished runs | steps/s | note |", "|---|---|---|---|---|---|"]
    for name, e in last.items():
        if name != "grid":
            lines.append(f"| {name} | {e['event']} | {e.get('seconds', '')} | {e.get('runs', '')} | "
                         f"{e.get('steps_per_s', '')} | {e.get('why', '')} |")
    (grid.out / "summary.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget-minutes", type=float, default=8.5, help="No stage runs past this (default 8.5).")
    parser.add_argument("--reserve-minutes", type=float, default=0.5, help="No stage starts in this last part of the budget.")
    parser.add_argument("--between-runs", action="store_true", help="Stop a stage as soon as it finishes a run "
                        "inside the reserve or after which a run as long as its longest so far would not end before the "
                        "budget, and start none whose folder's longest run would not (for a machine whose runs/ may not "
                        "survive: a run cut off mid-way is lost).")
    parser.add_argument("--workers", type=int, default=4, help="Stages run at once.")
    parser.add_argument("--carry", default="gpu_carry", help="What benchmarks/gpu_carry.py wrote.")
    parser.add_argument("--model", help="Encoder folder (default: CARRY/minilm-l6).")
    parser.add_argument("--glue-dir", help="GLUE tsv folders (default: CARRY/glue).")
    parser.add_argument("--tasks", nargs="+", default=list(MINI_GLUE), choices=MINI_GLUE, help="mini-GLUE v2's tasks.")
    parser.add_argument("--protocols", nargs="+", default=list(PROTOCOLS), choices=PROTOCOLS,
                        help="v2: mini-GLUE v2; glue-full: GLUE-full v1 (a GPU's work). Default: both.")
    parser.add_argument("--no-adaptive", action="store_true", help="Leave adaptive sharing and its three controls out "
                        "of v2's comparison (a CPU's cut: none of issue #15's claims reads them; issue #13 ran them).")
    parser.add_argument("--stages", nargs="+", help="Only these stages (names as in grid.jsonl), in the grid's order.")
    parser.add_argument("--runs", default="runs/protocol_grid", help="Run directories (not returned: weights).")
    parser.add_argument("--out", default=os.environ.get("OUT"), help="Results (default: $OUT).")
    parser.add_argument("--resume-from", help="An earlier call's $OUT (carried back): its finished runs are reused.")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="A setting for every command, e.g. train.max_steps=2 for a smoke test.")
    args = parser.parse_args()
    if not args.out:
        parser.error("give --out or set $OUT")
    start_time = time.time()
    carry = Path(args.carry)
    model = Path(args.model or carry / "minilm-l6")
    grid = Grid(Path(args.runs).resolve(), Path(args.out).resolve(), str(model.resolve()) if model.exists() else str(model),
                Path(args.glue_dir or carry / "glue").resolve(), args.tasks, args.overrides)
    (grid.out / "logs").mkdir(parents=True, exist_ok=True)
    grid.runs.mkdir(parents=True, exist_ok=True)
    if args.resume_from:  # light files suffice: a finished run is reused, never retrained (as phase_transition.py)
        mirror(Path(args.resume_from) / "runs", grid.runs)
    todo = [s for s in stages(args.tasks, args.protocols, not args.no_adaptive) if not args.stages or s.name in args.stages]
    grid.event("grid", "start", argv=sys.argv, machine=machine(), gpu=gpu_name(), stages=[s.name for s in todo])
    status = run_grid(grid, todo, args.workers, start_time + 60 * args.budget_minutes, 60 * args.reserve_minutes,
                      args.between_runs)
    mirror(grid.runs, grid.out / "runs")
    chosen_recipe(grid)  # recipe.json whenever step 1 finished, even if no later stage read it
    grid.event("grid", "end", seconds=round(time.time() - start_time, 1),
               done=sum(v == "done" for v in status.values()), of=len(status))
    write_summary(grid, args.budget_minutes, args.workers)


def gpu_name() -> str | None:
    import torch

    return torch.cuda.get_device_name() if torch.cuda.is_available() else None


if __name__ == "__main__":
    main()
