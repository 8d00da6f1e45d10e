"""Task-sampling schedulers: which task trains at each step. Batches are single-task, so each
task's mask applies to a whole batch.

The choice at step s is drawn from a generator seeded by (run seed, s): it needs no saved state to
resume exactly, and every DDP rank draws the same task (DESIGN.md decision 7).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Protocol

import numpy as np

from .schema import ConfigError, closest


class TaskSampler(Protocol):
    """Gives the probability of each task at a step; `sizes` are the tasks' batches per epoch."""

    def probabilities(self, step: int) -> np.ndarray: ...


SAMPLERS: dict[str, Callable[..., TaskSampler]] = {}


def register_sampler(name: str):
    def add(cls):
        if name in SAMPLERS or name != name.lower():
            raise ValueError(f"sampler name {name!r} must be lowercase and not registered yet")
        SAMPLERS[name] = cls
        return cls

    return add


@register_sampler("proportional")
class Proportional:
    """p(task) proportional to its number of batches: every example is seen about once an epoch."""

    def __init__(self, sizes: Mapping[str, int]):
        counts = np.array(list(sizes.values()), dtype=np.float64)
        self.p = counts / counts.sum()

    def probabilities(self, step: int) -> np.ndarray:
        return self.p


def build_sampler(name: str, sizes: Mapping[str, int]) -> TaskSampler:
    if name not in SAMPLERS:
        raise ConfigError(f"unknown sampler {name!r}{closest(name, SAMPLERS)}")
    return SAMPLERS[name](sizes)


def choose_task(sampler: TaskSampler, names: list[str], step: int, seed: int) -> str:
    """The task of one step, reproducible from (seed, step) alone."""
    if len(names) == 1:
        return names[0]
    rng = np.random.default_rng([seed, step])
    return names[int(rng.choice(len(names), p=sampler.probabilities(step)))]
