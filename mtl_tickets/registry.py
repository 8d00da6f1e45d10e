"""Task specs, declared in `tasks/*.yaml` and checked against the dataclasses below.

A new task is a new YAML entry, not a code change (the lm-evaluation-harness way). `register_task`
adds a spec from Python for the rare task that needs code to build it.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Literal

from .schema import ConfigError, closest, from_dict, load_yaml

# The project's tasks/ in a source checkout; a wheel ships the same files as mtl_tickets/tasks.
TASKS_DIR = next((d for d in (Path(__file__).resolve().parent.parent / "tasks", Path(__file__).resolve().parent / "tasks")
                  if d.is_dir()), Path(__file__).resolve().parent / "tasks")
Column = str | int  # a header name, or a 0-based index for files without a header


@dataclass(frozen=True)
class TsvSource:
    """Where a task lives in the original GLUE tsv layout (`<glue_dir>/<dir>/<split>.tsv[.gz]`)."""

    dir: str
    text: list[Column]  # one or two text columns
    label: Column | None = None  # absent for prediction-only sets
    header: bool = True  # train/dev files have a header row (CoLA's do not)
    test_text: list[Column] | None = None  # test files' text columns, when they differ from `text`
    train: str | None = "train"
    dev: list[str] = field(default_factory=lambda: ["dev"])
    test: list[str] = field(default_factory=lambda: ["test"])


@dataclass(frozen=True)
class HubSource:
    """Where a task lives on the Hugging Face hub (`datasets.load_dataset(path, name)`)."""

    name: str
    text: list[str]
    path: str = "nyu-mll/glue"
    label: str = "label"
    train: str | None = "train"
    dev: list[str] = field(default_factory=lambda: ["validation"])
    test: list[str] = field(default_factory=lambda: ["test"])


@dataclass(frozen=True)
class TaskSpec:
    """What a task is: its data, columns, labels and metrics. No hyper-parameters."""

    name: str
    tsv: TsvSource | None = None
    hub: HubSource | None = None
    kind: Literal["classification", "regression"] = "classification"
    labels: list[str] = field(default_factory=list)  # hub ids are positions in this list
    metrics: list[str] = field(default_factory=lambda: ["accuracy"])  # the first picks checkpoints
    submit: list[str] = field(default_factory=list)  # GLUE submission file stem per test split
    predict_with: str | None = None  # prediction-only sets (AX) borrow another task's head
    tags: list[str] = field(default_factory=list)
    version: int = 1

    def __post_init__(self) -> None:
        if self.kind == "classification" and len(self.labels) < 2:
            raise ValueError(f"task {self.name!r}: a classification task needs at least two labels")
        if self.kind == "regression" and self.labels:
            raise ValueError(f"task {self.name!r}: a regression task has no labels, got {self.labels}")
        if self.tsv is None and self.hub is None:
            raise ValueError(f"task {self.name!r}: give a `tsv` or a `hub` source (or both)")
        from .metrics import METRICS  # local: the registry is read without importing torch

        for metric in self.metrics:
            if metric not in METRICS:
                raise ValueError(f"task {self.name!r}: unknown metric {metric!r}{closest(metric, METRICS)}")

    @property
    def num_outputs(self) -> int:
        return 1 if self.kind == "regression" else len(self.labels)

    @property
    def trainable(self) -> bool:
        return self.predict_with is None


_extra: dict[str, TaskSpec] = {}


def register_task(spec: TaskSpec) -> TaskSpec:
    """Add a task built in Python; its name must be new and lowercase."""
    if spec.name != spec.name.lower() or spec.name in all_tasks():
        raise ValueError(f"task name {spec.name!r} must be lowercase and not registered yet")
    _extra[spec.name] = spec
    return spec


def registered_in_code() -> list[TaskSpec]:
    """The tasks `register_task` added in this process (a run's own process registers them again)."""
    return list(_extra.values())


def task_dirs() -> list[Path]:
    """The project's `tasks/` plus any folders in MTL_TICKETS_TASKS (os.pathsep-separated)."""
    extra = [Path(p) for p in os.environ.get("MTL_TICKETS_TASKS", "").split(os.pathsep) if p]
    return [TASKS_DIR, *extra]


def all_tasks() -> dict[str, TaskSpec]:
    """Every registered task by name: the YAML declarations, then the Python ones."""
    return {**_load_dirs(tuple(task_dirs())), **_extra}


@lru_cache(maxsize=4)
def _load_dirs(dirs: tuple[Path, ...]) -> dict[str, TaskSpec]:
    specs: dict[str, TaskSpec] = {}
    for folder in dirs:
        for path in sorted(folder.glob("*.yaml")):
            for spec in load_task_file(path):
                if spec.name in specs:
                    raise ConfigError(f"{path}: task {spec.name!r} is declared twice")
                specs[spec.name] = spec
    return specs


def load_task_file(path: Path) -> list[TaskSpec]:
    """Read one YAML file of task entries; `defaults` is merged under every entry."""
    data = load_yaml(path) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of task names to entries")
    defaults = data.pop("defaults", {}) or {}
    specs = []
    for name, entry in data.items():
        if not isinstance(entry, dict):
            raise ConfigError(f"{path}: {name}: expected a mapping, got {entry!r}")
        merged = _merge(defaults, entry)
        for source in ("tsv", "hub"):  # a source default only applies where the entry has the source
            if source not in entry:
                merged.pop(source, None)
        specs.append(from_dict(TaskSpec, {"name": str(name), **merged}, f"{path}: {name}"))
    return specs


def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in over.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def trainable(names: list[str]) -> list[TaskSpec]:
    """`resolve(names)` less the prediction-only sets (AX), which use another task's head."""
    return [s for s in resolve(names) if s.trainable]


def resolve(names: list[str]) -> list[TaskSpec]:
    """Task specs for names; a tag (e.g. `glue`) stands for every trainable task carrying it."""
    tasks = all_tasks()
    out: list[TaskSpec] = []
    for name in names:
        if name in tasks:
            out.append(tasks[name])
            continue
        tagged = [t for t in tasks.values() if name in t.tags and t.trainable]
        if not tagged:
            raise ConfigError(f"unknown task {name!r}{closest(name, tasks)}; `mtl-tickets tasks` lists them")
        out.extend(tagged)
    return list({t.name: t for t in out}.values())


def all_glue(names: list[str]) -> bool:
    """Whether every task named is a GLUE task (tagged `glue`): only then is their average called the
    GLUE average. A task not registered in this process counts as not GLUE."""
    tasks = all_tasks()
    return all(name in tasks and "glue" in tasks[name].tags for name in names)


def format_tasks(specs: list[TaskSpec]) -> str:
    """A table of task specs: kind, outputs, metrics, where the data comes from, tags."""
    lines = [f"{'task':6} {'kind':15} {'outputs':>7}  {'metrics':18} {'source':34} tags"]
    for s in specs:
        source = f"tsv {s.tsv.dir}" if s.tsv else ""
        source += f" hub {s.hub.path}/{s.hub.name}" if s.hub else ""
        kind = f"via {s.predict_with}" if s.predict_with else s.kind
        lines.append(f"{s.name:6} {kind:15} {s.num_outputs:7}  {','.join(s.metrics):18} {source.strip():34} {','.join(s.tags)}")
    return "\n".join(lines)
