"""GLUE metrics (as percentages) and the GLUE average as the paper computes it.

No torch here: `mtl-tickets tasks` validates metric names without loading it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

Metric = Callable[[np.ndarray, np.ndarray], float]
METRICS: dict[str, Metric] = {}


def register_metric(name: str) -> Callable[[Metric], Metric]:
    def add(fn: Metric) -> Metric:
        if name in METRICS or name != name.lower():
            raise ValueError(f"metric name {name!r} must be lowercase and not registered yet")
        METRICS[name] = fn
        return fn

    return add


@register_metric("accuracy")
def accuracy(pred: np.ndarray, gold: np.ndarray) -> float:
    return 100.0 * float(np.mean(pred == gold))


@register_metric("f1")
def f1(pred: np.ndarray, gold: np.ndarray) -> float:
    """F1 of the positive class (label 1), as GLUE reports it for MRPC and QQP."""
    tp = float(np.sum((pred == 1) & (gold == 1)))
    fp = float(np.sum((pred == 1) & (gold != 1)))
    fn = float(np.sum((pred != 1) & (gold == 1)))
    return 100.0 * 2 * tp / (2 * tp + fp + fn) if tp else 0.0


@register_metric("mcc")
def mcc(pred: np.ndarray, gold: np.ndarray) -> float:
    """Matthews correlation for binary labels; 0 when a margin is empty (as scikit-learn)."""
    tp = float(np.sum((pred == 1) & (gold == 1)))
    tn = float(np.sum((pred != 1) & (gold != 1)))
    fp = float(np.sum((pred == 1) & (gold != 1)))
    fn = float(np.sum((pred != 1) & (gold == 1)))
    denom = np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return 100.0 * (tp * tn - fp * fn) / denom if denom else 0.0


@register_metric("pearson")
def pearson(pred: np.ndarray, gold: np.ndarray) -> float:
    from scipy.stats import pearsonr

    return 100.0 * float(pearsonr(pred, gold)[0]) if np.std(pred) > 0 else 0.0


@register_metric("spearman")
def spearman(pred: np.ndarray, gold: np.ndarray) -> float:
    from scipy.stats import spearmanr

    return 100.0 * float(spearmanr(pred, gold)[0]) if np.std(pred) > 0 else 0.0


def compute(names: Sequence[str], pred: np.ndarray, gold: np.ndarray) -> dict[str, float]:
    """Every named metric of predictions against gold labels (or scores)."""
    return {name: METRICS[name](np.asarray(pred), np.asarray(gold)) for name in names}


HELDOUT = "heldout"  # a slice carved from train for selection; never counted in dev averages


def task_score(split_metrics: Mapping[str, Mapping[str, float]], split: str | None = None) -> float:
    """One number per task: the mean of its metrics over its dev splits (MRPC acc/F1, MNLI m/mm),
    or over one named split (e.g. the held-out slice)."""
    chosen = [split] if split else [s for s in split_metrics if s != HELDOUT]
    values = [v for s in chosen for v in split_metrics[s].values()]
    return float(np.mean(values))


def glue_average(results: Mapping[str, Mapping[str, Mapping[str, float]]]) -> float:
    """The paper's GLUE average: each task's metrics averaged first, then the tasks.

    Args:
        results: {task: {dev split: {metric: value}}}.
    """
    return float(np.mean([task_score(r) for r in results.values()]))
