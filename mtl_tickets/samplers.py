"""Task-sampling schedulers: which task trains at each step. Batches are single-task, so each
task's mask applies to a whole batch. Formulas: ../shared/reference/peers.md §6.

A scheduler's choice at step s is drawn from a generator seeded by (run seed, s), so it needs no
RNG state to resume exactly and every DDP rank draws the same task (DESIGN.md decision 7). The one
scheduler with state (`dynamic`) keeps it in plain numbers, saved with each checkpoint.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from .schema import ConfigError, closest


@dataclass(frozen=True)
class SamplerContext:
    """What a scheduler may use: batches per epoch of each task, epoch length and count."""

    names: list[str]
    batches: list[int]  # batches per epoch, per task
    epochs: float

    @property
    def steps_per_epoch(self) -> int:
        return sum(self.batches)


class TaskSampler(Protocol):
    def choose(self, step: int, seed: int) -> int:
        """Index of the task that trains at `step`."""

    def probabilities(self, step: int) -> np.ndarray:
        """The expected task mix at `step` (for logs and tests)."""

    def observe(self, task: int, loss: float) -> None:
        """A training loss of `task` (used by dynamic schedulers)."""

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


SAMPLERS: dict[str, Callable[..., TaskSampler]] = {}


def register_sampler(name: str):
    def add(cls):
        if name in SAMPLERS or name != name.lower():
            raise ValueError(f"sampler name {name!r} must be lowercase and not registered yet")
        SAMPLERS[name] = cls
        return cls

    return add


class RandomSampler:
    """Draws each step's task from `probabilities(step)` with a (seed, step) generator."""

    def __init__(self, ctx: SamplerContext):
        self.ctx = ctx

    def probabilities(self, step: int) -> np.ndarray:
        raise NotImplementedError

    def choose(self, step: int, seed: int) -> int:
        rng = np.random.default_rng([seed, step])
        return int(rng.choice(len(self.ctx.names), p=self.probabilities(step)))

    def observe(self, task: int, loss: float) -> None:
        pass

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def _normalise(weights: np.ndarray) -> np.ndarray:
    return weights / weights.sum()


@register_sampler("proportional")
class Proportional(RandomSampler):
    """p_i = N_i / sum N (N in batches): every example is seen about once an epoch."""

    def probabilities(self, step: int) -> np.ndarray:
        return _normalise(np.asarray(self.ctx.batches, dtype=float))


@register_sampler("uniform")
class Uniform(RandomSampler):
    """p_i = 1 / K."""

    def probabilities(self, step: int) -> np.ndarray:
        return np.full(len(self.ctx.names), 1 / len(self.ctx.names))


@register_sampler("temperature")
class Temperature(RandomSampler):
    """p_i ∝ min(N_i, cap)^(1/T) (Arivazhagan et al. 2019; T5's cap). T=1: proportional; T→∞: uniform."""

    def __init__(self, ctx: SamplerContext, temperature: float = 2.0, cap: float | None = None):
        super().__init__(ctx)
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if cap is not None and cap <= 0:
            raise ValueError(f"cap must be > 0 (leave it out for no cap), got {cap}")
        sizes = np.asarray(ctx.batches, dtype=float)
        self.p = _normalise(np.minimum(sizes, cap or np.inf) ** (1 / temperature))

    def probabilities(self, step: int) -> np.ndarray:
        return self.p


@register_sampler("annealed")
class Annealed(RandomSampler):
    """p_i ∝ N_i^α, α = 1 - 0.8 (e - 1)/(E - 1) (Stickland & Murray 2019): proportional at the first
    epoch, near uniform (α = 0.2) at the last."""

    def probabilities(self, step: int) -> np.ndarray:
        epochs = max(1, int(np.ceil(self.ctx.epochs)))
        e = min(epochs, step // self.ctx.steps_per_epoch + 1)
        alpha = 0.2 if epochs == 1 else 1 - 0.8 * (e - 1) / (epochs - 1)
        return _normalise(np.asarray(self.ctx.batches, dtype=float) ** alpha)


@register_sampler("mtdnn")
class MTDNNEpoch(RandomSampler):
    """MT-DNN's epoch sampler: every batch of every task exactly once per epoch, in shuffled order."""

    def choose(self, step: int, seed: int) -> int:
        epoch, position = divmod(step, self.ctx.steps_per_epoch)
        slots = np.repeat(np.arange(len(self.ctx.names)), self.ctx.batches)
        return int(np.random.default_rng([seed, epoch, 1]).permutation(slots)[position])

    def probabilities(self, step: int) -> np.ndarray:
        return _normalise(np.asarray(self.ctx.batches, dtype=float))


@register_sampler("round_robin")
class RoundRobin(RandomSampler):
    """Tasks in turn, one batch each."""

    def choose(self, step: int, seed: int) -> int:
        return step % len(self.ctx.names)

    def probabilities(self, step: int) -> np.ndarray:
        return np.full(len(self.ctx.names), 1 / len(self.ctx.names))


@register_sampler("dynamic")
class LossRatio(RandomSampler):
    """Loss-driven: p_i ∝ N_i · (L_i / L_i⁰)^(1/T), L_i an exponential average of task i's training
    loss and L_i⁰ its first loss. Tasks whose loss falls slower than the others' get more steps; the
    ratio makes tasks with different loss scales (MSE vs cross-entropy) comparable."""

    def __init__(self, ctx: SamplerContext, temperature: float = 1.0, smoothing: float = 0.9):
        super().__init__(ctx)
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if not 0 <= smoothing < 1:
            raise ValueError(f"smoothing must be in [0, 1), got {smoothing}")
        self.temperature, self.smoothing = temperature, smoothing
        self.first: list[float | None] = [None] * len(ctx.names)
        self.average: list[float | None] = [None] * len(ctx.names)

    def observe(self, task: int, loss: float) -> None:
        if self.first[task] is None:
            self.first[task] = self.average[task] = max(loss, 1e-8)
        else:
            self.average[task] = self.smoothing * self.average[task] + (1 - self.smoothing) * loss

    def probabilities(self, step: int) -> np.ndarray:
        ratio = np.array([1.0 if f is None else a / f for f, a in zip(self.first, self.average, strict=True)])
        return _normalise(np.asarray(self.ctx.batches, dtype=float) * np.clip(ratio, 1e-3, None) ** (1 / self.temperature))

    def state_dict(self) -> dict:
        return {"first": self.first, "average": self.average}

    def load_state_dict(self, state: dict) -> None:
        self.first, self.average = list(state["first"]), list(state["average"])


def build_sampler(name: str, ctx: SamplerContext, options: dict[str, float] | None = None) -> TaskSampler:
    """A registered scheduler by name; options are its keyword arguments (e.g. temperature)."""
    if name not in SAMPLERS:
        raise ConfigError(f"unknown sampler {name!r}{closest(name, SAMPLERS)}")
    cls = SAMPLERS[name]
    allowed = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "ctx")]
    for key in options or {}:
        if key not in allowed:
            raise ConfigError(f"sampler {name!r} has no option {key!r}" + (closest(key, allowed) if allowed else "; it takes none"))
    try:
        return cls(ctx, **(options or {}))
    except ValueError as err:
        raise ConfigError(f"sampler {name!r}: {err}") from None
