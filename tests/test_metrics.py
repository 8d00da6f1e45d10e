"""GLUE metrics against values computed by hand."""

import math

import numpy as np
import pytest

from mtl_tickets import metrics

PRED = np.array([1, 1, 0, 0, 1, 0])
GOLD = np.array([1, 0, 0, 1, 1, 0])  # tp=2 fp=1 fn=1 tn=2


def test_accuracy():
    assert metrics.accuracy(PRED, GOLD) == pytest.approx(100 * 4 / 6)


def test_f1_of_the_positive_class():
    assert metrics.f1(PRED, GOLD) == pytest.approx(100 * 2 * 2 / (2 * 2 + 1 + 1))


def test_mcc_by_hand():
    expected = (2 * 2 - 1 * 1) / math.sqrt(3 * 3 * 3 * 3)
    assert metrics.mcc(PRED, GOLD) == pytest.approx(100 * expected)


def test_mcc_of_a_constant_prediction_is_zero():
    assert metrics.mcc(np.zeros(6, dtype=int), GOLD) == 0.0


def test_pearson_and_spearman_by_hand():
    pred, gold = np.array([1.0, 2.0, 3.0, 5.0]), np.array([1.0, 3.0, 2.0, 4.0])
    pc, gc = pred - pred.mean(), gold - gold.mean()
    r = (pc @ gc) / math.sqrt((pc @ pc) * (gc @ gc))
    assert metrics.pearson(pred, gold) == pytest.approx(100 * r)
    # ranks 1 2 3 4 vs 1 3 2 4: d^2 = 0 1 1 0, rho = 1 - 6*2 / (4*15)
    assert metrics.spearman(pred, gold) == pytest.approx(100 * (1 - 12 / 60))


def test_glue_average_averages_each_task_first():
    results = {
        "mrpc": {"dev": {"f1": 90.0, "accuracy": 80.0}},
        "mnli": {"dev_matched": {"accuracy": 70.0}, "dev_mismatched": {"accuracy": 72.0}},
        "rte": {"dev": {"accuracy": 60.0}},
    }
    assert metrics.glue_average(results) == pytest.approx((85.0 + 71.0 + 60.0) / 3)


def test_metric_names_are_unique_and_lowercase():
    with pytest.raises(ValueError):
        metrics.register_metric("accuracy")(lambda p, g: 0.0)
