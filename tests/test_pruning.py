"""Tickets from scores: reference head counts, nesting, the min-one-head rule, exact random counts."""

import numpy as np
import pytest

from mtl_tickets.gates import EncoderShape
from mtl_tickets.importance import Scores
from mtl_tickets.masks import Ticket, params_of
from mtl_tickets.pruning import head_mask, levels, nested_tickets, reference_head_count

BASE = EncoderShape(layers=12, heads=12, ffn=3072, hidden=768)
MINI = EncoderShape(layers=6, heads=12, ffn=1536, hidden=384)


def test_reference_head_counts_for_bert_base_and_large():
    base = [reference_head_count(p, BASE) for p in range(5, 101, 5)]  # `seq 5 5 100`, reference §3.1
    assert base == [7, 14, 21, 28, 36, 43, 50, 57, 64, 72, 79, 86, 93, 100, 108, 115, 122, 129, 132, 132]
    large = EncoderShape(layers=24, heads=16, ffn=4096, hidden=1024)
    assert [reference_head_count(2.5 * k, large) for k in (1, 2, 3, 4, 5, 6, 14, 40)] == [9, 19, 28, 38, 48, 57, 134, 360]


def scores(shape=MINI, granularity="neuron", seed=0):
    rng = np.random.default_rng(seed)
    ffn = rng.random((shape.layers, shape.ffn) if granularity == "neuron" else shape.layers)
    return Scores(rng.random((shape.layers, shape.heads)), ffn)


@pytest.mark.parametrize("kind", ["winning", "losing", "random"])
def test_tickets_are_nested_with_exact_counts_and_one_head_per_layer(kind):
    grid = levels([0.1, 0.3, 0.5, 0.9, 0.99], "units", MINI, "neuron")
    tickets = nested_tickets(scores(), grid, kind, seed=4)
    previous = None
    for level, t in zip(grid, tickets.values(), strict=True):
        assert (~t.attn_heads).sum() == level.heads and (~t.ffn).sum() == level.ffn
        assert t.attn_heads.sum(axis=1).min() >= 1
        if previous is not None:
            assert not (t.attn_heads & ~previous.attn_heads).any() and not (t.ffn & ~previous.ffn).any()
        previous = t
    assert grid[-1].heads == 72 - 6  # capped: one head kept per layer


def test_winning_drops_the_least_important_and_losing_the_most():
    s = scores()
    win = head_mask(s.attn_heads, 10, "winning", 0)
    lose = head_mask(s.attn_heads, 10, "losing", 0)
    assert s.attn_heads[~win].max() <= s.attn_heads[win].max()
    assert s.attn_heads[~win].mean() < s.attn_heads[win].mean() < s.attn_heads[~lose].mean()


def test_min_head_rule_keeps_each_layers_best_head_in_winning_tickets():
    s = scores()
    keep = head_mask(s.attn_heads, 72, "winning", 0)
    assert keep.sum() == 6 and (keep.argmax(axis=1) == s.attn_heads.argmax(axis=1)).all()


def test_random_tickets_depend_on_the_seed_only():
    grid = levels([0.3], "units", MINI, "neuron")
    a = nested_tickets(scores(seed=0), grid, "random", seed=1)[0.3]
    b = nested_tickets(scores(seed=9), grid, "random", seed=1)[0.3]
    c = nested_tickets(scores(seed=0), grid, "random", seed=2)[0.3]
    assert a == b and a != c


def test_paired_mode_is_the_reference_pairing():
    grid = levels([0.1, 0.2, 0.8], "paired", BASE, "layer")
    assert [(l.heads, l.ffn) for l in grid] == [(14, 1), (28, 2), (115, 8)]
    assert levels([0.9], "paired", BASE, "layer", min_heads=2)[0].heads == 144 - 2 * 12  # 129, capped


def test_params_mode_hits_the_parameter_target():
    for target in (0.1, 0.3, 0.5):
        (level,) = levels([target], "params", MINI, "neuron")
        t = nested_tickets(scores(), [level], "winning")[target]
        full = params_of(Ticket.full(MINI), MINI)
        assert abs(1 - params_of(t, MINI) / full - target) < 0.01


def test_reference_parameter_accounting_for_bert_base():
    full = params_of(Ticket.full(BASE, "layer"), BASE)
    one_head = 4 * 64 * 768 + 3 * 64  # Q, K, V, O slices (+ Q, K, V biases)
    heads = np.ones((12, 12), bool)
    heads[0, 0] = False
    assert full - params_of(Ticket(heads, np.ones(12, bool)), BASE) == one_head
    assert full == 12 * (4 * 768 * 768 + 4 * 768 + 2 * 768 * 3072 + 3072 + 768 + 4 * 768)  # the HF encoder layers
