"""Shared vs task-specific tickets, one command: every contender trained on the same data, seeds and
budget, one table (per-task metric mean ± std over seeds, the GLUE average, the parameters used) and
every contender's paired difference to the first (stats.py), on seeds the super tickets were not
selected on.

A joint run is read two ways, and the table is written for both: each task at its own best epoch
(the rule a single-task run follows, and the paper's), and the joint model's one best checkpoint by
GLUE average (what is deployed as one model). Single-task contenders score the same under both.

    table = compare(load_config("configs/compare_mini_glue.yaml"))

Contenders: `single_full` (one model per task), `single_tickets` (one model per task through its super
ticket), `joint_full` (MT-DNN), `joint_tickets` (Tickets-Share), `joint_adaptive` (learned sharing), and
what tells adaptive sharing's learning from noise: `joint_adaptive_no_borrow` (a task may not take units
only other tickets keep), `joint_learned_fixed` (learn, then retrain from the pre-trained encoder with
the learned tickets fixed) and `joint_random_swaps` (the super tickets with as many units swapped at
random as the learned run of the same seed swapped). The last two read `joint_adaptive`'s run of the
same seed, training it first if needed.
Every run is an ordinary run directory under `<output_dir>/<contender>/`, trained in a fresh process
(`train.process_per_run`, fresh_process.py), so finished runs are reused;
so are the super-ticket sweep's own runs of the full model and the super ticket (same recipe and seed).
When every super ticket keeps every unit, a tickets contender is its full twin's run and reuses it.
"""

from __future__ import annotations

import copy
import csv
import logging
import statistics
from dataclasses import astuple, dataclass, fields
from pathlib import Path

import numpy as np

from . import registry, rundir, sharing
from .build import trainable_specs
from .config import CONTENDER_SHARING, Config, single_task
from .encoders import load_shape
from .masks import SWEEP_DIR, Ticket, TicketSet
from .metrics import task_score
from .schema import ConfigError, load_yaml, to_dict
from .stats import COLUMNS, PairedDifference
from .fresh_process import train_run
from .validation import validate

log = logging.getLogger(__name__)

FROM_LEARNED = ("joint_learned_fixed", "joint_random_swaps")  # fixed tickets made from joint_adaptive's run
FULL_TWIN = {"single_tickets": "single_full", "joint_tickets": "joint_full"}  # same runs when no unit is masked
SELECTIONS = {  # how a run's dev score per task is read
    "per_task": "Each task at its own best epoch (the paper's rule, which single-task runs follow too)",
    "checkpoint": "One model: each joint run's best checkpoint by GLUE average (single-task runs as above)",
}


@dataclass(frozen=True)
class Row:
    """One contender: per-task scores over seeds, and what it costs in encoder parameters."""

    contender: str
    seeds: list[int]
    scores: dict[str, list[float]]  # task -> one score per seed
    average: list[float]  # average over tasks per seed (the paper's GLUE average on GLUE tasks)
    params_per_task: float  # mean fraction of encoder-layer parameters one task runs through
    params_total: float  # encoder-layer parameters to store, in units of one full encoder
    runs_of: str | None = None  # the contender whose runs these are (every super ticket keeps every unit)


def compare(cfg: Config, progress: bool = True) -> dict[str, list[Row]]:
    """Train (or reuse) every contender with every seed; write the tables (`write_table`, named by
    compare.table); return the rows under each selection rule."""
    validate(cfg, "compare")
    shape = load_shape(cfg.model.name)
    specs = trainable_specs(cfg)
    tasks = [s.name for s in specs]
    super_tickets = load_super_tickets(cfg, shape)
    rows = [run_contender(cfg, contender, tasks, super_tickets, shape, progress) for contender in cfg.compare.contenders]
    tables = {selection: [r[selection] for r in rows] for selection in SELECTIONS}
    write_table(Path(cfg.output_dir), tables, tasks, glue=registry.all_glue(tasks), name=cfg.compare.table)
    return tables


def load_super_tickets(cfg: Config, shape) -> dict[str, Ticket]:
    """Every task's super ticket; none are needed when only full-encoder contenders run."""
    if not cfg.compare.uses_tickets() and not cfg.tickets_file:
        return {}
    if not cfg.tickets_file:
        raise ConfigError("compare needs tickets_file: the super tickets (`mtl-tickets tickets find`, "
                          "`mtl-tickets tickets merge` for per-task sweeps)")
    return TicketSet.load(Path(cfg.tickets_file), expect=shape).tickets  # every task has one: validate() checked


def run_contender(cfg: Config, contender: str, tasks: list[str], super_tickets: dict[str, Ticket], shape,
                  progress: bool) -> dict[str, Row]:
    scores: dict[str, dict[str, list[float]]] = {sel: {t: [] for t in tasks} for sel in SELECTIONS}
    used: list[dict[str, Ticket]] = []
    runs_of = full_twin(contender, tasks, super_tickets)
    for seed in cfg.compare.seeds:
        groups = [[t] for t in tasks] if contender.startswith("single") else [tasks]
        for group in groups:
            results, out = run(cfg, runs_of or contender, group, seed, super_tickets, progress)
            for task in group:
                scores["per_task"][task].append(task_score(results["per_task_best"][task]["metrics"]))
                scores["checkpoint"][task].append(task_score(results["best"]["tasks"][task]))
            used.append(tickets_used(contender, group, super_tickets, out, shape))
    per_task = statistics.mean(t.kept_params(shape) for u in used for t in u.values()) / full_params(shape)
    per_seed = len(used) // len(cfg.compare.seeds)
    total = sum(union_params(list(u.values()), shape) for u in used[:per_seed]) / full_params(shape)
    rows = {}
    for selection, by_task in scores.items():
        average = [statistics.mean(by_task[t][i] for t in tasks) for i in range(len(cfg.compare.seeds))]
        rows[selection] = Row(contender, list(cfg.compare.seeds), by_task, average, per_task, total, runs_of)
    return rows


def full_twin(contender: str, tasks: list[str], super_tickets: dict[str, Ticket]) -> str | None:
    """The full-model contender whose runs this one would repeat: a ticket that keeps every unit masks
    nothing, so training through it is the full model's run, trained once and read twice."""
    if contender not in FULL_TWIN:
        return None
    keeps_all = all(super_tickets[t].attn_heads.all() and super_tickets[t].ffn.all() for t in tasks)
    return FULL_TWIN[contender] if keeps_all else None


def run(cfg: Config, contender: str, tasks: list[str], seed: int, super_tickets: dict[str, Ticket],
        progress: bool) -> tuple[dict, Path]:
    single = contender.startswith("single")
    cell = single_task(cfg, tasks[0]) if single else copy.deepcopy(cfg)
    cell.tasks, cell.sharing, cell.train.seed = tasks, CONTENDER_SHARING[contender], seed
    cell.output_dir = str(Path(cfg.output_dir) / contender / f"{tasks[0] if single else 'joint'}-s{seed}")
    if cell.sharing == "full":
        cell.tickets_file = None
    if contender == "joint_adaptive_no_borrow":
        cell.adaptive.borrow = False
    if contender in FROM_LEARNED:
        cell.tickets_file = str(tickets_from_learned(cfg, contender, tasks, seed, super_tickets, progress))
    found = sweep_run(cell, super_tickets[tasks[0]]) if single and super_tickets else None
    if found is not None:
        return found
    result = train_run(cell, progress)
    return result.results, result.output_dir


def tickets_from_learned(cfg: Config, contender: str, tasks: list[str], seed: int, super_tickets: dict[str, Ticket],
                         progress: bool) -> Path:
    """The fixed tickets of a FROM_LEARNED contender, written beside its runs: the learned tickets of
    `joint_adaptive` with this seed, or the super tickets with as many random swaps."""
    learned = TicketSet.load(run(cfg, "joint_adaptive", tasks, seed, super_tickets, progress)[1] / "learned_tickets.json")
    path = Path(cfg.output_dir) / contender / f"tickets-s{seed}.json"
    if contender == "joint_random_swaps":
        rng = np.random.default_rng(seed)
        candidates = {t: Ticket.full(learned.shape) if cfg.adaptive.borrow else sharing.own_or_free(t, super_tickets) for t in tasks}
        tickets = {t: sharing.random_swaps(super_tickets[t], learned.tickets[t], candidates[t], rng) for t in tasks}
        learned = TicketSet(learned.encoder, learned.shape, tickets)
    if not path.is_file():  # written once: a resumed run trains through the same tickets
        learned.save(path)
    return path


def recipe(config: dict) -> dict:
    """What decides a single-task run's result, besides its ticket: tasks, model, data and training."""
    return {key: copy.deepcopy(config.get(key)) for key in ("tasks", "model", "data", "train")}


def sweep_run(cell: Config, super_ticket: Ticket) -> tuple[dict, Path] | None:
    """The super-ticket sweep's own run of this single-task cell, if it finished with the same recipe.

    `tickets find` trains the full model and the best winning ticket with each confirm seed; those are the
    `single_full` and `single_tickets` contenders, so compare reads them instead of training them again.
    """
    sweep = sweep_dir(super_ticket)
    if sweep is None:  # not from `tickets find` (imported or hand-made)
        return None
    wanted = "full" if cell.sharing == "full" or super_ticket.info["kind"] == "full" \
        else f"{super_ticket.info['kind']}-{super_ticket.info['sparsity']:g}"
    out = sweep / f"{wanted}-s{cell.train.seed}"
    results = rundir.finished_results(out)
    if results is None:
        return None
    differences = rundir.config_differences(recipe(rundir.with_defaults(load_yaml(out / "config.yaml") or {})),
                                            recipe(to_dict(cell)))
    if differences:
        log.info("not reusing %s: %s", out, "; ".join(differences[:3]))
        return None
    if wanted != "full" and TicketSet.load(out / "tickets.json").tickets.get(cell.tasks[0]) != super_ticket:
        log.info("not reusing %s: it trained another ticket", out)
        return None
    return results, out


def sweep_dir(ticket: Ticket) -> Path | None:
    """Where the `tickets find` sweep that found `ticket` keeps its runs, if it came from one."""
    if SWEEP_DIR in ticket.info:
        return Path(ticket.info[SWEEP_DIR])
    if "scores" in ticket.info:  # files written before sweep_dir: its scores.json, relative to the working directory
        return Path(ticket.info["scores"]).parent
    return None


def tickets_used(contender: str, tasks: list[str], super_tickets: dict[str, Ticket], out: Path, shape) -> dict[str, Ticket]:
    if CONTENDER_SHARING[contender] == "full":
        return {t: Ticket.full(shape) for t in tasks}
    if CONTENDER_SHARING[contender] == "adaptive":
        return TicketSet.load(out / "learned_tickets.json").tickets
    if contender in FROM_LEARNED:
        return TicketSet.load(out / "tickets.json").tickets
    return {t: super_tickets[t] for t in tasks}


def full_params(shape) -> int:
    return Ticket.full(shape).kept_params(shape)


def union_params(tickets: list[Ticket], shape) -> int:
    """Encoder-layer parameters of the units any of the tickets keeps."""
    union = Ticket(np.logical_or.reduce([t.attn_heads for t in tickets]), np.logical_or.reduce([t.ffn for t in tickets]))
    return union.kept_params(shape)


def fmt(values: list[float]) -> str:
    mean = statistics.mean(values)
    return f"{mean:.2f} ± {statistics.stdev(values):.2f}" if len(values) > 1 else f"{mean:.2f}"


def write_table(out: Path, tables: dict[str, list[Row]], tasks: list[str], glue: bool = True,
                name: str = "comparison") -> None:
    """<name>.csv (one line per selection rule, contender and seed, scores to 4 decimals), <name>_paired.csv
    (every contender against the first, per task and the average) and <name>.md (mean ± std, then the
    paired differences). The task average is called the GLUE average only when every task is a GLUE task."""
    average, column = ("GLUE avg", "glue_average") if glue else ("average", "average")
    out.mkdir(parents=True, exist_ok=True)
    with (out / f"{name}.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["selection", "contender", "seed", *tasks, column, "params_per_task", "params_total", "runs_of"])
        for selection, rows in tables.items():
            for r in rows:
                for i, (seed, mean) in enumerate(zip(r.seeds, r.average, strict=True)):
                    writer.writerow([selection, r.contender, seed, *(f"{r.scores[t][i]:.4f}" for t in tasks), f"{mean:.4f}",
                                     f"{r.params_per_task:.3f}", f"{r.params_total:.3f}", r.runs_of or ""])
    write_paired(out / f"{name}_paired.csv", tables, tasks, column)
    lines = []
    for selection, rows in tables.items():
        lines += [f"## {SELECTIONS[selection]}", "",
                  "| contender | " + " | ".join(tasks) + f" | {average} | params/task | params stored |",
                  "|" + "---|" * (len(tasks) + 4)]
        for r in rows:
            lines.append(f"| {r.contender} | " + " | ".join(fmt(r.scores[t]) for t in tasks)
                         + f" | {fmt(r.average)} | {r.params_per_task:.1%} | {r.params_total:.2f}x |")
        reused = [f"{r.contender} reuses the runs of {r.runs_of}: every super ticket keeps every unit." for r in rows if r.runs_of]
        if reused:
            lines += ["", *reused]
        if len(rows) > 1:
            lines += ["", *paired_table(rows, tasks, average)]
        lines.append("")
    (out / f"{name}.md").write_text("\n".join(lines))


def differences(rows: list[Row], tasks: list[str], average: str) -> list[tuple[str, str, PairedDifference]]:
    """(contender, task, difference) of every contender against the first, on each task and on the
    average (named `average`), paired by seed: a seed fixes data order and head init for every
    contender, so the per-seed difference is the honest measure against seed noise."""
    base, out = rows[0], []
    for r in rows[1:]:
        out += [(r.contender, t, PairedDifference.of(r.scores[t], base.scores[t])) for t in tasks]
        out.append((r.contender, average, PairedDifference.of(r.average, base.average)))
    return out


def paired_table(rows: list[Row], tasks: list[str], average: str = "GLUE avg") -> list[str]:
    """The paired differences against the first contender as a markdown table, one line per contender and task."""
    n = len(rows[0].seeds)
    lines = [f"Against {rows[0].contender}, paired by seed ({n} seed{'' if n == 1 else 's'}): the mean difference, called "
             "a difference only when its 95 % t interval excludes 0; paired t-test p; exact sign-flip p (all 2^n flips); "
             "seeds ahead; the smallest true difference this design detects with 80 % power at two-sided 0.05, "
             "given the observed paired std.", "",
             "| contender | task | " + " | ".join(COLUMNS) + " |", "|" + "---|" * (len(COLUMNS) + 2)]
    return lines + [f"| {contender} | {task} | " + " | ".join(d.cells()) + " |" for contender, task, d in differences(rows, tasks, average)]


def write_paired(path: Path, tables: dict[str, list[Row]], tasks: list[str], average: str) -> None:
    """Every paired difference of every selection rule, one line each, to 6 decimals (undefined ones empty)."""
    names = [f.name for f in fields(PairedDifference)]
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["selection", "contender", "baseline", "task", *names])
        for selection, rows in tables.items():
            for contender, task, d in differences(rows, tasks, average):
                values = ("" if v is None else round(v, 6) for v in astuple(d))
                writer.writerow([selection, contender, rows[0].contender, task, *values])
