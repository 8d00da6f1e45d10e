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


def pooled(m, batch, task="rte") -> torch.Tensor:
    """The vectors (B, D) the task head receives."""
    seen = []
    handle = m.task_heads[task].register_forward_hook(lambda mod, args, out: seen.append(args[0]))
    m(batch, task)
    handle.remove()
    return seen[0]


@pytest.mark.parametrize("pooling", ["mean", "cls", "pooler"])
def test_each_pooling_reads_what_it_names(pooling):
    m, batch = model(pooling), token_batch()
    hidden = m.encoder(**batch).last_hidden_state  # (B, T, D); row 0 ends in two padding tokens
    expected = {
        "mean": torch.stack([hidden[b, keep.bool()].mean(0) for b, keep in enumerate(batch["attention_mask"])]),
        "cls": hidden[:, 0],
        "pooler": torch.tanh(hidden[:, 0] @ m.encoder.pooler.dense.weight.T + m.encoder.pooler.dense.bias),
    }[pooling]
    torch.testing.assert_close(pooled(m, batch), expected)


def test_task_heads_reset_to_the_same_weights_for_the_same_seed():
    a, b = model(), model()
    b.reset_task_heads(seed=1)
    for name in a.task_heads:
        assert torch.equal(a.task_heads[name].linear.weight, b.task_heads[name].linear.weight)
    b.reset_task_heads(seed=2)
    assert not torch.equal(a.task_heads["rte"].linear.weight, b.task_heads["rte"].linear.weight)


def test_losses_are_cross_entropy_and_mse_computed_by_hand():
    m, batch = model(), token_batch()
    logits, labels = m(batch, "mnli"), torch.tensor([0, 2, 1])  # (3, 3)
    log_probs = logits - logits.exp().sum(-1, keepdim=True).log()
    torch.testing.assert_close(m.loss(logits, labels, "mnli"), -log_probs[torch.arange(3), labels].mean())
    scores, gold = m(batch, "stsb"), torch.tensor([0.5, 2.0, 4.0])  # (3,)
    torch.testing.assert_close(m.loss(scores, gold, "stsb"), ((scores - gold) ** 2).mean())
