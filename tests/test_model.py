"""MultiTaskModel: pooling, heads, losses."""

import pytest
import torch

from mtl_tickets import registry
from mtl_tickets.model import MultiTaskModel

from .conftest import tiny_encoder, token_batch


def model(pooling="mean"):
    specs = registry.resolve(["rte", "stsb", "mnli"])
    m = MultiTaskModel(tiny_encoder(), specs, pooling=pooling, head_dropout=0.0).eval()
    m.reset_task_heads(seed=1)
    return m


def test_output_shapes_per_task_kind():
    m, batch = model(), token_batch()
    assert m(batch, "rte").shape == (3, 2)
    assert m(batch, "mnli").shape == (3, 3)
    assert m(batch, "stsb").shape == (3,)


def test_mean_pooling_ignores_padding():
    m, batch = model(), token_batch()
    pooled = []
    m.task_heads["rte"].register_forward_hook(lambda mod, args, out: pooled.append(args[0]))
    m(batch, "rte")
    hidden = m.encoder(**batch).last_hidden_state
    torch.testing.assert_close(pooled[0][0], hidden[0, :5].mean(0))


@pytest.mark.parametrize("pooling", ["cls", "pooler"])
def test_other_poolings_run(pooling):
    assert model(pooling)(token_batch(), "rte").shape == (3, 2)


def test_task_heads_reset_to_the_same_weights_for_the_same_seed():
    a, b = model(), model()
    b.reset_task_heads(seed=1)
    for name in a.task_heads:
        assert torch.equal(a.task_heads[name].linear.weight, b.task_heads[name].linear.weight)
    b.reset_task_heads(seed=2)
    assert not torch.equal(a.task_heads["rte"].linear.weight, b.task_heads["rte"].linear.weight)


def test_losses_by_task_kind():
    m, batch = model(), token_batch()
    ce = m.loss(m(batch, "rte"), torch.tensor([0, 1, 1]), "rte")
    mse = m.loss(m(batch, "stsb"), torch.tensor([0.5, 2.0, 4.0]), "stsb")
    assert ce.item() > 0 and mse.item() > 0
