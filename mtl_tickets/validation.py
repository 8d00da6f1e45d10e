"""Every check a run's settings can fail without data or a model, run first by each recipe (train,
tickets find, compare) and by `mtl-tickets validate`: a bad setting fails in milliseconds, not after
tokenising data and loading the encoder.

Checks of one field stay in its dataclass's `__post_init__` (config.py); here are the ones that need
a registry (tasks, samplers), a file (the ticket set), or two sections at once. Two belong to one
recipe: the selection seed is never a confirmation seed (`tickets find`, `compare`).
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Literal

from . import registry
from .config import Config, load_config
from .samplers import SamplerContext, build_sampler
from .schema import ConfigError, closest, load_yaml

Recipe = Literal["train", "tickets", "compare"]


def validate(cfg: Config, recipe: Recipe = "train") -> None:
    """Raise `ConfigError` naming the first setting of `cfg` that `recipe` cannot run; reads no data,
    loads no model."""
    tasks = trainable_tasks(cfg)
    check_train_caps(cfg)
    check_sampler(cfg, tasks)
    check_selection(cfg)
    if cfg.tickets_file:
        check_tickets_file(Path(cfg.tickets_file), tasks)
    if recipe == "tickets":
        check_confirm_seeds(cfg)
    if recipe == "compare":
        check_compare_seeds(cfg, tasks)


def trainable_tasks(cfg: Config) -> list[str]:
    """The run's task names (tags expanded); prediction-only sets such as AX train nothing."""
    names = [s.name for s in registry.trainable(cfg.tasks)]
    if not names:
        raise ConfigError(f"tasks {cfg.tasks}: none of them can be trained (prediction-only sets use another task's head)")
    return names


def check_train_caps(cfg: Config) -> None:
    known = registry.all_tasks()
    for name in cfg.data.max_train_examples_per_task:
        if name not in known:
            raise ConfigError(f"data.max_train_examples_per_task: unknown task {name!r}{closest(name, known)}")


def check_sampler(cfg: Config, tasks: list[str]) -> None:
    """Build the sampler over a stand-in epoch of one batch per task: the run builds it the same way,
    so names, option names and option values are checked once, in samplers.py."""
    try:
        build_sampler(cfg.train.sampler, SamplerContext(tasks, [1] * len(tasks), cfg.train.epochs), cfg.train.sampler_options)
    except ConfigError as err:
        raise ConfigError(f"train.sampler: {err}") from None


def check_selection(cfg: Config) -> None:
    if cfg.tickets.select_on == "heldout" and not cfg.data.holdout:
        raise ConfigError("tickets.select_on: heldout needs data.holdout > 0 (e.g. --set data.holdout=0.1)")


def check_tickets_file(path: Path, tasks: list[str]) -> None:
    """The ticket file parses (masks.py's schema, each unit within its declared shape) and has a ticket
    for every task. Whether it fits the encoder is checked when the encoder is loaded."""
    from .masks import TicketSet  # imports torch (through gates.py): only when a ticket file is named

    if not path.is_file():
        raise ConfigError(f"tickets_file {path} does not exist; give the tickets.json of `mtl-tickets tickets find`")
    try:
        tickets = TicketSet.load(path).tickets
    except ConfigError as err:
        raise ConfigError(f"tickets_file: {err}") from None
    missing = [t for t in tasks if t not in tickets]
    if missing:
        raise ConfigError(f"tickets_file {path} has no ticket for {', '.join(missing)} (it has {', '.join(tickets) or 'none'}); "
                          "find them with `mtl-tickets tickets find` and join the files with `mtl-tickets tickets merge`")


def check_confirm_seeds(cfg: Config) -> None:
    """`tickets find` makes its grid and picks the super ticket on train.seed: rerunning that seed to
    confirm the choice would grade it on the very run that made it."""
    seeds, seed = cfg.tickets.confirm_seeds, cfg.train.seed
    if seed in seeds:
        raise ConfigError(f"tickets.confirm_seeds {seeds} contain train.seed {seed}, the seed the grid and the super ticket "
                          f"are chosen on; confirm on other seeds, e.g. tickets.confirm_seeds={other_seeds(seeds, {seed})}")


def check_compare_seeds(cfg: Config, tasks: list[str]) -> None:
    """A contender that trains through the super tickets is not compared on the seed they were selected
    on (a ticket's `seed`, as `tickets find` records it): the choice was made on that seed's runs."""
    if not cfg.tickets_file or not cfg.compare.uses_tickets():
        return
    from .masks import TicketSet  # imports torch (through gates.py): only when a ticket file is named

    tickets = TicketSet.load(Path(cfg.tickets_file)).tickets  # check_tickets_file has read it: every task has one
    selected = {t: tickets[t].info["seed"] for t in tasks if tickets[t].info.get("seed") in cfg.compare.seeds}
    if selected:
        on = ", ".join(f"{t}: {s}" for t, s in selected.items())
        raise ConfigError(f"compare.seeds {cfg.compare.seeds} include seeds the super tickets were selected on ({on}; "
                          f"tickets_file {cfg.tickets_file}); compare on other seeds, "
                          f"e.g. compare.seeds={other_seeds(cfg.compare.seeds, set(selected.values()))}")


def other_seeds(seeds: list[int], taken: set[int]) -> list[int]:
    """The fix an error suggests: `seeds` without the `taken` ones, topped up with the next seeds above them."""
    kept = [s for s in seeds if s not in taken]
    fresh = (s for s in itertools.count(max(seeds) + 1) if s not in taken)
    return kept + list(itertools.islice(fresh, len(seeds) - len(kept)))


def validate_file(path: Path, overrides: list[str] | None = None) -> str:
    """Check a run config (with `overrides`) as the recipes do, or a task file through the registry's
    checker; a one-line summary of what it holds. Files in a tasks folder are task files. A config that
    sets a recipe's own section (`tickets`, `compare`; in the file or an override) is checked as that
    recipe checks it, any other as a training run."""
    if path.parent.name == "tasks" or path.resolve().parent in {d.resolve() for d in registry.task_dirs()}:
        return f"{len(registry.load_task_file(path))} tasks"
    cfg = load_config(path, overrides)
    sections = set(load_yaml(path) or {}) | {item.partition("=")[0].split(".")[0].strip() for item in overrides or []}
    try:
        for recipe in [r for r in ("tickets", "compare") if r in sections] or ["train"]:
            validate(cfg, recipe)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
    return f"tasks {', '.join(cfg.tasks)}; sharing {cfg.sharing}"
