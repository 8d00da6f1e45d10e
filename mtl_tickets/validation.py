"""Every check a run's settings can fail without data or a model, run first by each recipe (train,
tickets find, compare) and by `mtl-tickets validate`: a bad setting fails in milliseconds, not after
tokenising data and loading the encoder.

Checks of one field stay in its dataclass's `__post_init__` (config.py); here are the ones that need
a registry (tasks, samplers), a file (the ticket set), or two sections at once.
"""

from __future__ import annotations

from pathlib import Path

from . import registry
from .config import Config, load_config
from .samplers import SamplerContext, build_sampler
from .schema import ConfigError, closest


def validate(cfg: Config) -> None:
    """Raise `ConfigError` naming the first setting of `cfg` that cannot run; reads no data, loads no model."""
    tasks = trainable_tasks(cfg)
    check_train_caps(cfg)
    check_sampler(cfg, tasks)
    check_selection(cfg)
    if cfg.tickets_file:
        check_tickets_file(Path(cfg.tickets_file), tasks)


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


def validate_file(path: Path, overrides: list[str] | None = None) -> str:
    """Check a run config (with `overrides`) as the recipes do, or a task file through the registry's
    checker; a one-line summary of what it holds. Files in a tasks folder are task files."""
    if path.parent.name == "tasks" or path.resolve().parent in {d.resolve() for d in registry.task_dirs()}:
        return f"{len(registry.load_task_file(path))} tasks"
    cfg = load_config(path, overrides)
    try:
        validate(cfg)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
    return f"tasks {', '.join(cfg.tasks)}; sharing {cfg.sharing}"
