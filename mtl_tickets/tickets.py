"""The super-ticket recipe (paper §3): fine-tune, score units, prune at each sparsity, rewind to the
pre-trained weights, re-fine-tune each ticket, keep the best winning ticket (the full model counts).

    ticket_set = find_super_tickets(load_config("configs/tickets_mini_glue.yaml", ["tasks=[rte]"]))

Every cell (kind, sparsity, seed) is an ordinary run directory under `<output_dir>/<task>/`, so a
killed sweep resumes and a finished cell is never trained twice; each trains in a fresh process, as
does the importance pass (`train.process_per_run`, fresh_process.py). Rewinding is `train()` itself: it
builds the model from the pre-trained encoder and re-initialises the task head with the same seed,
so data order and head init match the run that found the ticket.
"""

from __future__ import annotations

import csv
import json
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from . import registry
from .build import trainable_specs
from .config import Config, single_task
from .data import load_task, subsample
from .encoders import load_shape, load_tokenizer
from .gates import EncoderShape
from .importance import Scores, score_units
from .inference import load_run
from .masks import SWEEP_DIR, Ticket, TicketSet
from .metrics import HELDOUT, task_score
from .pruning import levels, nested_tickets
from .stats import PairedDifference
from .fresh_process import heavy_step, train_run
from .validation import validate


@dataclass(frozen=True)
class Cell:
    """One re-fine-tuned ticket: its kind and sparsity, what it keeps, and how it scored."""

    kind: str  # full | winning | random | losing
    sparsity: float
    seed: int
    kept: float  # fraction of encoder parameters kept
    dev_best: float  # best-epoch dev score (the paper's selection; optimistic)
    dev_last: float
    heldout_best: float | None  # best-epoch score on the held-out train slice, if any
    dev_at_heldout_best: float | None  # dev score at the epoch the held-out slice picked (honest)

    def selection_score(self, select_on: str) -> float:
        return self.heldout_best if select_on == "heldout" else self.dev_best

    def reported_score(self, select_on: str) -> float:
        return self.dev_at_heldout_best if select_on == "heldout" else self.dev_best


def curve_cell(info: dict, kind: str, sparsity: float) -> Cell | None:
    """The cell of a super ticket's curve (its `info`) at this kind and sparsity; None where its sweep ran none."""
    return next((Cell(**c) for c in info["curve"] if c["kind"] == kind and abs(c["sparsity"] - sparsity) < 1e-9), None)


def find_super_tickets(cfg: Config, progress: bool = True) -> TicketSet:
    """Each task's super ticket, with its phase-transition curve, as one ticket set."""
    validate(cfg, "tickets")
    root = Path(cfg.output_dir)
    super_tickets, shape = {}, None
    for spec in trainable_specs(cfg):
        task_root = root / spec.name
        full_run = train_run(cell_config(cfg, spec.name, task_root / "full-s{seed}"), progress).output_dir
        scores, shape = task_scores(cfg, spec, full_run, task_root / "scores.json", progress)
        candidates = candidate_tickets(cfg, scores, shape)
        cells = [run_cell(cfg, spec.name, kind, s, t, shape, task_root, cfg.train.seed, progress)
                 for (kind, s), t in candidates.items()]
        best = max((c for c in cells if c.kind in ("full", "winning")), key=lambda c: c.selection_score(cfg.tickets.select_on))
        winners = [c for c in cells if c.kind == "winning"]
        best_winning = max(winners, key=lambda c: c.selection_score(cfg.tickets.select_on)) if winners else None
        confirm = confirm_with_seeds(cfg, spec.name, best_winning, candidates, shape, task_root, progress)
        ticket = candidates[(best.kind, best.sparsity)]
        super_tickets[spec.name] = Ticket(ticket.attn_heads, ticket.ffn, {
            "kind": best.kind, "sparsity": best.sparsity, "selected_on": cfg.tickets.select_on,
            "metric": score_name(spec), "seed": cfg.train.seed, "scores": str(task_root / "scores.json"),
            SWEEP_DIR: str(task_root.resolve()),
            "curve": [c.__dict__ for c in cells], "confirm": confirm})
        write_curve(root, spec.name, super_tickets[spec.name].info)
    ticket_set = TicketSet(cfg.model.name, shape, super_tickets)
    ticket_set.save(root / "tickets.json")
    write_board(root, ticket_set)
    return ticket_set


def format_super_tickets(ticket_set: TicketSet) -> str:
    """One line per task: its super ticket, and the full model and best winning ticket over the confirm seeds."""
    return "\n".join(f"{task:6} super ticket: {t.info['kind']} at sparsity {t.info['sparsity']:g} | {confirm_summary(t.info)}"
                     for task, t in ticket_set.tickets.items())


def score_name(spec: registry.TaskSpec) -> str:
    """What a cell's score is: the task's metric, or the mean of its metrics (MRPC, STS-B)."""
    return spec.metrics[0] if len(spec.metrics) == 1 else f"mean of {' and '.join(spec.metrics)}"


def cell_config(cfg: Config, task: str, out_dir: Path, seed: int | None = None, tickets_file: Path | None = None) -> Config:
    """The single-task run config of one cell (`{seed}` in the folder name is filled in). Only the full
    model of the grid's seed keeps its best weights: they are scored (`task_scores`); nothing reads the
    weights of the other cells (compare reads their results), so they keep none."""
    cell = single_task(cfg, task)
    cell.train.seed = cfg.train.seed if seed is None else seed
    cell.output_dir = str(out_dir).format(seed=cell.train.seed)
    cell.train.save_best = tickets_file is None and cell.train.seed == cfg.train.seed
    if tickets_file is not None:
        cell.sharing, cell.tickets_file = "tickets", str(tickets_file)
    return cell


def task_scores(cfg: Config, spec: registry.TaskSpec, full_run: Path, path: Path, progress: bool) -> tuple[Scores, EncoderShape]:
    """Importance scores on the fine-tuned full model over the training set (cached in `path`; computed
    in a fresh process where the runs are, fresh_process.py)."""
    if not path.is_file():
        heavy_step(cfg, f"the importance pass of {full_run}", write_scores, cfg, spec, full_run, path, progress)
    return Scores.from_json(json.loads(path.read_text())), load_shape(cfg.model.name)


def write_scores(cfg: Config, spec: registry.TaskSpec, full_run: Path, path: Path, progress: bool) -> None:
    """Score the units of the full model's best weights over the task's training set, into `path`."""
    _, model = load_run(full_run)
    train_data = load_task(spec, load_tokenizer(cfg.model.name), cfg.data).train
    if cfg.tickets.score_examples:
        train_data = subsample(train_data, cfg.tickets.score_examples, cfg.data.subsample_seed)
    scores = score_units(model, spec.name, train_data, cfg.tickets.ffn_granularity, cfg.train.batch_size,
                         cfg.tickets.legacy_cumulative, progress=progress)
    path.write_text(json.dumps(scores.to_json()))


def candidate_tickets(cfg: Config, scores: Scores, shape: EncoderShape) -> dict[tuple[str, float], Ticket]:
    """The full model, then the nested tickets of every kind at its sparsities."""
    tc = cfg.tickets
    candidates = {("full", 0.0): Ticket.full(shape, tc.ffn_granularity)}
    for kind in tc.kinds:
        grid = levels(tc.sparsities if kind == "winning" else tc.control_sparsities, tc.sparsity_mode, shape,
                      tc.ffn_granularity, tc.min_heads_per_layer)
        for sparsity, ticket in nested_tickets(scores, grid, kind, tc.random_seed, tc.min_heads_per_layer).items():
            candidates[(kind, sparsity)] = ticket
    return candidates


def run_cell(cfg: Config, task: str, kind: str, sparsity: float, ticket: Ticket, shape: EncoderShape,
             task_root: Path, seed: int, progress: bool) -> Cell:
    """Rewind and re-fine-tune one ticket (or the full model); reuses a finished run."""
    if kind == "full":
        out, tickets_file = task_root / f"full-s{seed}", None
    else:
        name = f"{kind}-{sparsity:g}"
        tickets_file = task_root / "tickets" / f"{name}.json"
        if not tickets_file.is_file():
            TicketSet(cfg.model.name, shape, {task: ticket}).save(tickets_file)
        out = task_root / f"{name}-s{seed}"
    results = train_run(cell_config(cfg, task, out, seed, tickets_file), progress).results
    history = results["history"]
    dev = [task_score(r["tasks"][task]) for r in history]
    held = [task_score(r["tasks"][task], HELDOUT) for r in history] if HELDOUT in history[0]["tasks"][task] else None
    full_params = Ticket.full(shape, ticket.granularity).kept_params(shape)
    return Cell(kind, sparsity, seed, ticket.kept_params(shape) / full_params, max(dev), dev[-1],
                max(held) if held else None, dev[int(np.argmax(held))] if held else None)


def confirm_with_seeds(cfg: Config, task: str, best_winning: Cell | None, candidates, shape, task_root: Path,
                       progress: bool) -> dict:
    """The full model and the best winning ticket rerun with every confirm seed (never the grid's seed,
    validation sees to it): whether the winning ticket beats the full model, against seed noise,
    whichever of them the grid's seed picked. The winning entry keeps its paired difference to the full
    model (`vs_full`) for readers of the ticket file. No confirm seeds: no reruns, nothing to report."""
    out = {}
    if not cfg.tickets.confirm_seeds:
        return out
    contenders = {"full": ("full", 0.0)}
    if best_winning is not None:
        contenders["winning"] = ("winning", best_winning.sparsity)
    for name, (kind, sparsity) in contenders.items():
        cells = [run_cell(cfg, task, kind, sparsity, candidates[(kind, sparsity)], shape, task_root, seed, progress)
                 for seed in cfg.tickets.confirm_seeds]
        scores = [c.reported_score(cfg.tickets.select_on) for c in cells]
        out[name] = {"kind": kind, "sparsity": sparsity, "seeds": cfg.tickets.confirm_seeds, "scores": scores,
                     "mean": statistics.mean(scores), "std": statistics.stdev(scores) if len(scores) > 1 else 0.0}
    if "winning" in out:
        out["winning"]["vs_full"] = asdict(winning_vs_full(out))
    return out


def winning_vs_full(confirm: dict) -> PairedDifference:
    """The best winning ticket minus the full model over the confirm seeds, paired by seed."""
    return PairedDifference.of(confirm["winning"]["scores"], confirm["full"]["scores"])


def confirm_summary(info: dict) -> str:
    """One line on a super ticket's seed reruns: each contender's mean ± std and the winning ticket's
    paired difference to the full model, or that there were none. The difference is recomputed from
    the scores, so files written before `vs_full` read the same."""
    confirm = info.get("confirm")
    if not confirm:
        return "no seed confirmation (tickets.confirm_seeds is empty)"
    named = {("full model" if v["kind"] == "full" else f"{v['kind']} {v['sparsity']:g}"): v for v in confirm.values()}
    line = "  ".join(f"{name}: {v['mean']:.2f} ± {v['std']:.2f}" for name, v in named.items()) + f" (seeds {confirm['full']['seeds']})"
    if "winning" not in confirm:
        return line
    return line + f" | winning {confirm['winning']['sparsity']:g} - full model: {winning_vs_full(confirm)}"


def write_curve(root: Path, task: str, info: dict) -> None:
    """`<task>_curve.csv` and `<task>_curve.png` beside the ticket file, from a super ticket's info."""
    from .board import phase_transition_figure, save_figure

    cells = [Cell(**c) for c in info["curve"]]
    with (root / f"{task}_curve.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["kind", "sparsity", "seed", "kept", "dev_best", "dev_last", "heldout_best", "dev_at_heldout_best"])
        for c in sorted(cells, key=lambda c: (c.kind, c.sparsity)):
            writer.writerow([c.kind, c.sparsity, c.seed, f"{c.kept:.4f}", f"{c.dev_best:.2f}", f"{c.dev_last:.2f}",
                             _fmt(c.heldout_best), _fmt(c.dev_at_heldout_best)])
    save_figure(phase_transition_figure(*curve_rows(info), task, info["metric"]), root / f"{task}_curve.png")


def curve_rows(info: dict) -> tuple[list[dict], list[dict]]:
    """A super ticket's curve as figure rows (kind, kept, score), and its seed reruns (kind, kept,
    mean, std, seeds): the grid's one seed, and the noise to read it against."""
    select_on = info["selected_on"]
    cells = [Cell(**c) for c in info["curve"]]
    rows = [{"kind": c.kind, "kept": c.kept, "score": c.reported_score(select_on)} for c in cells]
    kept = {(c.kind, c.sparsity): c.kept for c in cells}
    reruns = [{"kind": r["kind"], "kept": kept[(r["kind"], r["sparsity"])], "mean": r["mean"], "std": r["std"],
               "seeds": r["seeds"]} for r in info.get("confirm", {}).values()]
    return rows, reruns


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def write_board(root: Path, ticket_set: TicketSet) -> None:
    """TensorBoard: each task's phase-transition curve, ticket map and importance histograms."""
    from torch.utils.tensorboard import SummaryWriter

    from .board import phase_transition_figure, ticket_map_figure

    writer = SummaryWriter(log_dir=str(root / "tensorboard"))
    for task, ticket in ticket_set.tickets.items():
        select_on = ticket.info["selected_on"]
        cells = [Cell(**c) for c in ticket.info["curve"]]
        curve = phase_transition_figure(*curve_rows(ticket.info), task, ticket.info["metric"])
        writer.add_figure(f"tickets/{task}/phase_transition", curve)
        writer.add_figure(f"tickets/{task}/super_ticket", ticket_map_figure(ticket, task))
        for c in cells:
            writer.add_scalar(f"tickets/{task}/{c.kind}", c.reported_score(select_on), round(100 * (1 - c.kept)))
        scores = Scores.from_json(json.loads(Path(ticket.info["scores"]).read_text()))
        writer.add_histogram(f"importance/{task}/attn_heads", scores.attn_heads, 0)
        writer.add_histogram(f"importance/{task}/ffn", scores.ffn, 0)
    writer.close()
