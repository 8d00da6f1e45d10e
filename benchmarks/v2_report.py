"""mini-GLUE v2's result files, from what the protocol grid finished (benchmarks/protocol_grid.py).

    python benchmarks/v2_report.py                      # the CPU grid's folder, benchmarks/results/v2_grid
    python benchmarks/v2_report.py --grid path/to/OUT   # a GPU call's $OUT, carried back

Writes into benchmarks/results/, as far as the grid has got (a part whose stages have not finished says
so), each file naming its protocol and the commands that made it (from the grid's grid.jsonl):

    v2_convergence.md       step 1: the full model per task at 3, 6 and 10 epochs (lr 1e-4) and at the
                            second lr, seeds 1-2: best- and last-epoch dev, the epoch of the best; the recipe
    v2_phase_transition.md  every sweep (selected on dev, on the held-out slice, the paper's shape): the
                            seed-1 grid with its controls, the super ticket, its confirmation on seeds 2-6
    v2_comparison.md        the contenders on seeds 2-6 (compare's own tables)
    v2_claims.md            issue #15's claims (a)-(d): effect, 95 % interval, n and what the unit of n is

Every difference is read with mtl_tickets.PairedDifference and called one only when its interval
excludes 0 (PROTOCOL.md, mini-GLUE v2).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from protocol_grid import BUDGETS, LRS, MINI_GLUE, V2, budget_bar, chosen_epochs, seed_glue_averages

from mtl_tickets.compare import fmt
from mtl_tickets.metrics import task_score
from mtl_tickets.stats import COLUMNS, PairedDifference, verdict
from mtl_tickets.tickets import Cell, curve_cell, winning_vs_full

RESULTS = Path(__file__).parent / "results"
SWEEPS = {"dev": "selected on dev (the paper's rule)", "heldout": "selected on a held-out 10 % of train",
          "dev-paper": "the paper's sweep shape (10 % of heads with one whole FFN layer per step), selected on dev"}
LATE = 3  # epochs: how far back the last-epoch table looks for a climb at the end of a joint run
PENDING = "Not finished yet: `python benchmarks/protocol_grid.py ...` continues the grid (its docstring)."


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--grid", default=str(RESULTS / "v2_grid"), help="The protocol grid's --out folder.")
    parser.add_argument("--results", default=str(RESULTS), help="Where the v2_*.md files go.")
    args = parser.parse_args()
    grid, out = Path(args.grid), Path(args.results)
    commands = stage_commands(grid)
    out.mkdir(parents=True, exist_ok=True)
    for name, lines in (("convergence", convergence(grid, commands)), ("phase_transition", sweeps(grid, commands)),
                        ("comparison", comparison(grid, commands)), ("claims", claims(grid))):
        path = out / f"v2_{name}.md"
        path.write_text("\n".join(lines) + "\n")
        print(path)


def stage_commands(grid: Path) -> dict[str, str]:
    """Each stage's last command line, as the grid started it; under "grid" the grid's own last call and
    under "calls" how many calls there were."""
    commands, calls = {}, 0
    if (grid / "grid.jsonl").is_file():
        for line in (grid / "grid.jsonl").open():
            event = json.loads(line)
            if event["event"] == "start" and "command" in event:
                commands[event["stage"]] = event["command"].removeprefix("-m mtl_tickets.cli ")
            elif event["event"] == "start" and "argv" in event:
                commands["grid"] = " ".join(["python", *event["argv"]])
                calls += 1
    return {**commands, "calls": str(calls)}


def header(title: str, commands: dict[str, str], stages: list[str]) -> list[str]:
    ran = [f"- {s}: `{commands[s]}`" for s in stages if s in commands] or ["- (none started yet)"]
    calls = "1 call" if commands["calls"] == "1" else f"{commands['calls']} calls"
    made = [f"Made by {calls} of the protocol grid, each continuing where the committed grid stopped (every "
            f"call's arguments are in v2_grid/grid.jsonl); the last: `{commands['grid']}`.", ""
            ] if "grid" in commands else []
    return [f"# {title} ({V2})", "", *made, f"Protocol: {V2} (../shared/PROTOCOL.md). "
            "Commands (`mtl-tickets ...`), as the protocol grid ran them:", "", *ran, ""]


# ------------------------------------------------------------------------------- step 1


def full_runs(folder: Path) -> dict[tuple[str, int], dict]:
    """The single-task full model's runs in a compare folder, by (task, seed): those compare read (a run
    writes results.json when it ends its schedule or its train.max_steps, never when stopped)."""
    runs = {}
    for path in sorted((folder / "single_full").glob("*-s*/results.json")):
        results = json.loads(path.read_text())
        runs[(results["tasks"][0], results["config"]["train"]["seed"])] = results
    return runs


def convergence(grid: Path, commands: dict[str, str]) -> list[str]:
    stages = [f"v2-budget-e{e}" for e in BUDGETS] + ["v2-lr"]
    lines = header("Convergence check: budget and learning rate", commands, stages)
    lines += ["The full model per task, seeds 1 and 2: the best-epoch dev score (mean of the seeds), the last epoch's,",
              "and the epochs of the best (a best at the last epoch: still improving). The budget is the smallest whose",
              "GLUE average is within half a seed-std of the largest's; then the lr with the higher mean.", "",
              "| epochs | lr | task | best (mean) | last (mean) | epochs of the best | seeds |", "|---|---|---|---|---|---|---|"]
    folders = [(e, LRS[0], grid / "runs" / "v2" / f"budget-e{e}") for e in BUDGETS]
    folders += [(int(p.name.split("-e")[1]), LRS[1], p) for p in sorted((grid / "runs" / "v2").glob(f"lr{LRS[1]:g}-e*"))]
    found = False
    for epochs, lr, folder in folders:
        runs = full_runs(folder)
        for task in MINI_GLUE:
            seeds = sorted(s for t, s in runs if t == task)
            if not seeds:
                continue
            found = True
            best = [task_score(runs[(task, s)]["per_task_best"][task]["metrics"]) for s in seeds]
            last = [task_score(runs[(task, s)]["last"]["tasks"][task]) for s in seeds]
            at = [f"{runs[(task, s)]['per_task_best'][task]['epoch']:g}" for s in seeds]
            lines.append(f"| {epochs} | {lr:g} | {task} | {statistics.mean(best):.2f} | {statistics.mean(last):.2f} | "
                         f"{', '.join(at)} | {', '.join(map(str, seeds))} |")
    if not found:
        return lines + [PENDING]
    by_budget = {e: seed_glue_averages(grid / "runs" / "v2" / f"budget-e{e}" / "comparison.csv", "single_full") for e in BUDGETS}
    averages = "; ".join(f"{e} epochs {fmt(list(v.values()))} (seeds {', '.join(map(str, v))})" for e, v in by_budget.items() if v)
    if averages:  # each budget's table, as soon as its stage has written it
        lines += ["", f"GLUE average (best epoch per task, mean ± std over seeds) by budget at lr 1e-4: {averages}."]
    if all(by_budget.values()):
        scores = {e: list(v.values()) for e, v in by_budget.items()}
        means = ", ".join(f"{e} epochs {statistics.mean(v):.3f}" for e, v in scores.items())
        lines += ["", f"The rule's bar, {BUDGETS[-1]} epochs' mean less half its seed-std: {budget_bar(scores):.3f} "
                  f"(means {means}): **{chosen_epochs(scores)} epochs**."]
    recipe = grid / "recipe.json"
    if not recipe.is_file():
        return lines + ["", "The recipe is chosen once every budget and the lr check have finished. " + PENDING]
    chosen = json.loads(recipe.read_text())
    by_lr = "; ".join(f"lr {lr} {fmt(v)}" for lr, v in chosen["glue_average_by_lr"].items())
    return lines + ["", f"At the chosen budget: {by_lr}.", "",
                    f"**Recipe for every later v2 run: {chosen['epochs']} epochs, lr {chosen['lr']:g}** ({chosen['rule']})."]


# ------------------------------------------------------------------------------- sweeps


def sweep_tickets(grid: Path, rule: str) -> dict[str, dict]:
    """Each finished sweep's super-ticket info (curve and confirmation) for one selection rule."""
    found = {}
    for path in sorted((grid / "runs" / "v2" / f"sweep-{rule}").glob("*/tickets.json")):
        task = path.parent.name
        found[task] = json.loads(path.read_text())["tickets"][task]
    return found


def sweeps(grid: Path, commands: dict[str, str]) -> list[str]:
    stages = [f"v2-sweep-{rule}-{t}" for rule in SWEEPS for t in MINI_GLUE]
    lines = header("Phase transition: super ticket vs full model", commands, stages)
    lines += ["Default encoder at the v2 recipe; FFN neurons and `units` sparsity unless said. The grid at seed 1 (winning",
              "tickets at 10-50 %; random and losing controls at 10, 30 and 50 % in the dev-selected neuron sweeps only, the",
              "ones claim (c) reads), the dev metric at the best epoch (held-out selection: at the epoch best on the held-out",
              "slice); the full model and the best winning ticket rerun on seeds 2-6, paired by seed. `kept`: fraction of",
              "encoder parameters. Curves: the PNGs named below.", ""]
    for rule, title in SWEEPS.items():
        infos = sweep_tickets(grid, rule)
        lines += [f"## Sweeps {title}", ""]
        if not infos:
            lines += [PENDING, ""]
        for task, info in infos.items():
            full = reported(info, curve_cell(info, "full", 0.0))
            lines += [f"### {task} ({info['metric']})", "", "| kind | sparsity | kept | dev (selected epoch) | dev last | vs full |",
                      "|---|---|---|---|---|---|"]
            for c in sorted((Cell(**c) for c in info["curve"]), key=lambda c: (c.kind, c.sparsity)):
                score = reported(info, c)
                lines.append(f"| {c.kind} | {c.sparsity:g} | {c.kept:.3f} | {score:.2f} | {c.dev_last:.2f} | {score - full:+.2f} |")
            confirm = info.get("confirm") or {}
            lines += ["", f"Super ticket: **{info['kind']} at sparsity {info['sparsity']:g}**.", ""]
            if "winning" in confirm:
                d = winning_vs_full(confirm)
                lines += [f"Best winning ticket ({confirm['winning']['sparsity']:g}) minus the full model on seeds "
                          f"{confirm['full']['seeds']}: {d.mean:+.2f}, {verdict(d)}.", ""]
            lines += [f"Curve: `v2_grid/runs/v2/sweep-{rule}/{task}/{task}_curve.png`", ""]
    return lines


def confirmed_super_ticket(info: dict) -> list[float]:
    """The super ticket's confirmation scores: the full model's when the full model won the grid."""
    return info["confirm"]["full" if info["kind"] == "full" else "winning"]["scores"]


# ------------------------------------------------------------------------------- comparison


def comparison(grid: Path, commands: dict[str, str]) -> list[str]:
    """compare's table of every contender; until the grid's last comparison stage writes it, the tables of
    the contender stages that have finished (each contender alone, no differences)."""
    folder, title = grid / "runs" / "v2" / "compare", "Tickets-Share vs MT-DNN vs single-task"
    if (folder / "comparison.md").is_file() and "v2-compare" in commands:
        return header(title, commands, ["v2-compare"]) + [
            "Seeds 2-6; the super tickets are the dev-selected ones (each task's sweep, merged).", "",
            section(folder / "comparison.md")] + last_epoch_bests(folder)
    finished = sorted(folder.glob("comparison_*.md"))
    stages = [f"v2-compare-{f.stem.removeprefix('comparison_')}" for f in finished]
    lines = header(title, commands, stages) + [
        "The table of every contender, with their paired differences, is written by the grid's last comparison stage. " + PENDING]
    for table, stage in zip(finished, stages, strict=True):
        lines += ["", f"## {stage.removeprefix('v2-compare-')} alone, seeds 2-6 (its stage's table)", "", section(table)]
    return lines + last_epoch_bests(folder)


def last_epoch_bests(folder: Path) -> list[str]:
    """Which finished joint runs have a best on their last epoch: models that may still have been improving
    at the budget the convergence check chose on single-task runs (where no best was the last epoch)."""
    contenders: dict[str, list[Path]] = {}
    for path in sorted(folder.glob("joint_*/joint-s*/results.json")):
        contenders.setdefault(path.parent.parent.name, []).append(path)
    if not contenders:
        return []
    lines = ["", "## Bests on the last epoch", "",
             "Each finished joint run (`sN`: seed N): the tasks whose best dev epoch is its last, and whether its best",
             "checkpoint (the one-model rule) is. Step 1's single-task runs had none at this budget. The last column",
             f"asks whether the runs were still climbing: the GLUE average on the last epoch minus {LATE} epochs before,",
             "paired by seed.", "",
             f"| contender | runs | task bests on the last epoch | one-model bests on the last epoch | last epoch minus {LATE} before |",
             "|---|---|---|---|---|"]
    for contender, paths in contenders.items():
        tasks, models, task_bests, last_scores, before = [], [], 0, [], []
        for path in paths:
            run, seed = json.loads(path.read_text()), path.parent.name.removeprefix("joint-")
            last = max(h["epoch"] for h in run["history"])
            tasks += [f"{task} {seed}" for task, best in run["per_task_best"].items() if best["epoch"] == last]
            models += [seed] if run["best"]["epoch"] == last else []
            task_bests += len(run["per_task_best"])
            last_scores.append(run["history"][-1]["glue_average"])
            before.append(run["history"][-1 - LATE]["glue_average"])
        climb = PairedDifference.of(last_scores, before)
        lines.append(f"| {contender} | {len(paths)} | {listed(tasks, task_bests)} | {listed(models, len(paths))} | "
                     f"{climb.mean:+.2f}, {verdict(climb)} |")
    return lines


def listed(found: list[str], of: int) -> str:
    return f"{len(found)} of {of}" + (f": {', '.join(found)}" if found else "")


def section(markdown: Path) -> str:
    """One of compare's markdown tables, its headings a level down."""
    return ("\n" + markdown.read_text()).replace("\n## ", "\n### ").strip()


# ------------------------------------------------------------------------------- claims


def claims(grid: Path) -> list[str]:
    lines = [f"# Issue #15's claims ({V2})", "", "Protocol: mini-GLUE v2 (../shared/PROTOCOL.md), read from the grid's committed runs.", "",
             "Each line: the mean difference, its 95 % t interval, n and what n counts. A difference is called one only",
             "when the interval excludes 0. Seeds 2-6 are paired by seed (same data order and head initialisation);",
             "where n counts tasks, the interval reads the spread over tasks (task differences and seed noise together).",
             "Each line is its own test, uncorrected for the others: of lines with no true difference, about 1 in 20",
             "reads as one by chance.", "",
             "| claim | measure | n | difference | reading |", "|---|---|---|---|---|"]
    dev, held = sweep_tickets(grid, "dev"), sweep_tickets(grid, "heldout")
    rows = super_ticket_vs_full(dev) + shared_vs_mtdnn(grid) + winning_vs_controls(dev) + selection_optimism(dev, held)
    return lines + (rows or [f"| (none yet) | {PENDING} | | | |"]) + super_tickets_in_full(dev) + shared_vs_mtdnn_per_task(grid)


def confirmed_sweeps(dev: dict[str, dict]) -> dict[str, dict]:
    """The sweeps whose best winning ticket and full model have been rerun on the confirmation seeds."""
    return {t: i for t, i in dev.items() if "winning" in (i.get("confirm") or {})}


def super_ticket_vs_full(dev: dict[str, dict]) -> list[str]:
    """(a) per task, and on the GLUE average once every task is confirmed."""
    confirmed = confirmed_sweeps(dev)
    rows = [row("(a) super ticket > full", f"{task}: best winning ticket ({info['confirm']['winning']['sparsity']:g}) minus full",
                winning_vs_full(info["confirm"]), "seeds") for task, info in confirmed.items()]
    if set(confirmed) == set(MINI_GLUE):
        win, full = (seed_averages([i["confirm"][kind]["scores"] for i in confirmed.values()]) for kind in ("winning", "full"))
        rows.append(row("(a) super ticket > full", "GLUE average, the best winning tickets minus the full models",
                        PairedDifference.of(win, full), "seeds"))
    return rows


def super_tickets_in_full(dev: dict[str, dict]) -> list[str]:
    """(a) per task with what its one-line reading leaves out: the seed-1 dev scores the super ticket was
    picked on (an optimistic pick, claim (d)) and each side's mean ± std on seeds 2-6."""
    confirmed = confirmed_sweeps(dev)
    if not confirmed:
        return []
    lines = ["", "## (a) per task, in full", "",
             "The best winning ticket on dev at seed 1 (the selection) against the full model, then both on seeds 2-6",
             "(mean ± std, paired by seed).", "",
             "| task (metric) | removed | seed 1: ticket / full | seeds 2-6: ticket | seeds 2-6: full | " + " | ".join(COLUMNS) + " |",
             "|---" * (5 + len(COLUMNS)) + "|"]
    for task, info in confirmed.items():
        winning, full = info["confirm"]["winning"], info["confirm"]["full"]
        picked = f"{cell(info, 'winning', winning['sparsity']):.2f} / {cell(info, 'full', 0.0):.2f}"
        lines.append(f"| {task} ({info['metric']}) | {winning['sparsity'] * 100:.0f} % | {picked} | {fmt(winning['scores'])} | "
                     f"{fmt(full['scores'])} | " + " | ".join(winning_vs_full(info["confirm"]).cells()) + " |")
    return lines


def shared_vs_mtdnn(grid: Path) -> list[str]:
    """(b) from the comparison's table, under both of compare's selection rules; then each joint contender
    against its single-task twin (one model for five tasks against five models)."""
    table = grid / "runs" / "v2" / "compare" / "comparison.csv"
    pairs = [("(b) Tickets-Share > MT-DNN", "joint_tickets", "joint_full", "checkpoint", "one model: each run's best checkpoint"),
             ("(b) Tickets-Share > MT-DNN", "joint_tickets", "joint_full", "per_task", "each task at its best epoch"),
             ("(b) joint vs single-task", "joint_tickets", "single_tickets", "per_task", "each task at its best epoch"),
             ("(b) joint vs single-task", "joint_full", "single_full", "per_task", "each task at its best epoch")]
    rows = []
    for claim, contender, baseline, selection, rule in pairs:
        ours, theirs = paired_seeds(table, contender, baseline, selection)
        if ours:
            rows.append(row(claim, f"GLUE average, {contender} minus {baseline} ({rule})", PairedDifference.of(ours, theirs), "seeds"))
    return rows


def paired_seeds(table: Path, contender: str, baseline: str, selection: str,
                 column: str = "glue_average") -> tuple[list[float], list[float]]:
    """Contender's and baseline's scores in compare's table, over the seeds both have, in seed order
    (empty before both have one)."""
    ours, theirs = (seed_glue_averages(table, c, selection, column) for c in (contender, baseline))
    seeds = sorted(set(ours) & set(theirs))
    return [ours[s] for s in seeds], [theirs[s] for s in seeds]


def shared_vs_mtdnn_per_task(grid: Path) -> list[str]:
    """(b) task by task under both selection rules: where the GLUE average's difference comes from."""
    table = grid / "runs" / "v2" / "compare" / "comparison.csv"
    rules = {"checkpoint": "one model", "per_task": "each task at its best epoch"}
    lines = []
    for selection, rule in rules.items():
        for task in MINI_GLUE:
            ours, theirs = paired_seeds(table, "joint_tickets", "joint_full", selection, task)
            if ours:
                lines.append(f"| {rule} | {task} | {statistics.mean(ours):.2f} | {statistics.mean(theirs):.2f} | "
                             + " | ".join(PairedDifference.of(ours, theirs).cells()) + " |")
    if not lines:
        return []
    return ["", "## (b) per task, in full", "",
            "Tickets-Share (joint_tickets) minus MT-DNN (joint_full), task by task, paired by seed (seeds 2-6), under",
            "both of compare's selection rules. Ten uncorrected lines: where the GLUE average's difference comes from,",
            "not claims of their own.", "",
            "| rule | task | Tickets-Share | MT-DNN | " + " | ".join(COLUMNS) + " |", "|---" * (4 + len(COLUMNS)) + "|", *lines]


def winning_vs_controls(dev: dict[str, dict]) -> list[str]:
    """(c) at each control sparsity, over the tasks (the grid runs one seed): read as soon as two tasks'
    sweeps have the pair, the tasks named until all five have it."""
    rows = []
    for control in ("random", "losing"):
        for sparsity in (0.1, 0.3, 0.5):
            pairs = {t: (cell(i, "winning", sparsity), cell(i, control, sparsity)) for t, i in dev.items()}
            pairs = {t: p for t, p in pairs.items() if None not in p}
            if len(pairs) < 2:
                continue
            winning, other = zip(*pairs.values(), strict=True)
            which = "" if set(pairs) == set(MINI_GLUE) else f" ({len(pairs)} of {len(MINI_GLUE)} tasks: {', '.join(pairs)})"
            rows.append(row(f"(c) winning > {control}", f"seed-1 dev, winning minus {control} at {sparsity:g}{which}",
                            PairedDifference.of(list(winning), list(other)), "tasks"))
    return rows


def selection_optimism(dev: dict[str, dict], held: dict[str, dict]) -> list[str]:
    """(d) how much a super ticket's seed-1 dev score overstates its seeds 2-6 mean under each rule, and
    the two rules' super tickets against each other on dev."""
    if not all(t in dev and t in held and dev[t].get("confirm") and held[t].get("confirm") for t in MINI_GLUE):
        return []
    rows = [row("(d) selection optimism", f"{rule}-selected super ticket: seed-1 dev minus its seeds 2-6 mean",
                PairedDifference.of([seed1_dev_score(infos[t]) for t in MINI_GLUE],
                                    [statistics.mean(confirmed_super_ticket(infos[t])) for t in MINI_GLUE]), "tasks")
            for rule, infos in (("dev", dev), ("held-out", held))]
    by_dev, by_held = (seed_averages([confirmed_super_ticket(infos[t]) for t in MINI_GLUE]) for infos in (dev, held))
    return rows + [row("(d) dev vs held-out selection", "GLUE average on dev, dev-selected minus held-out-selected super "
                       "tickets (the latter trained without the held-out 10 %)", PairedDifference.of(by_dev, by_held), "seeds")]


def seed_averages(per_task: list[list[float]]) -> list[float]:
    """The average over tasks, seed by seed (each list in the same seed order)."""
    return [statistics.mean(scores) for scores in zip(*per_task, strict=True)]


def row(claim: str, measure: str, d: PairedDifference, unit: str) -> str:
    return f"| {claim} | {measure} | {d.n} {unit} | {d.mean:+.2f} | {verdict(d, unit.removesuffix('s'))} |"


def cell(info: dict, kind: str, sparsity: float) -> float | None:
    """A grid cell's best-epoch dev score, or None where the grid has no such cell."""
    found = curve_cell(info, kind, sparsity)
    return None if found is None else found.dev_best


def reported(info: dict, c: Cell) -> float:
    """A cell's dev score at the epoch its sweep's rule picks (the best on dev, or on the held-out slice)."""
    return c.reported_score(info["selected_on"])


def seed1_dev_score(info: dict) -> float:
    """The super ticket's seed-1 dev score at the epoch its rule picked: what dev selection chose it on
    (a held-out choice never looked at dev)."""
    return reported(info, curve_cell(info, info["kind"], info["sparsity"]))


if __name__ == "__main__":
    main()
