"""Importance scores: the per-token form against a direct computation, and the gate gradient."""

import gc

import numpy as np
import torch

from mtl_tickets import registry
from mtl_tickets.data import Encoded
from mtl_tickets.importance import score_units
from mtl_tickets.model import MultiTaskModel

from .conftest import tiny_encoder


def setup(n=6, T=5):
    torch.manual_seed(3)
    model = MultiTaskModel(tiny_encoder(), registry.resolve(["rte"]), head_dropout=0.0)
    model.reset_task_heads(1)
    lengths = np.full(n, T)
    ids = torch.randint(5, 99, (int(lengths.sum()),)).numpy().astype(np.int32)
    data = Encoded(ids, np.zeros_like(ids, dtype=np.int8), np.concatenate([[0], np.cumsum(lengths)]), np.arange(n) % 2)
    batch = {"input_ids": torch.tensor(ids.reshape(n, T), dtype=torch.long),
             "attention_mask": torch.ones(n, T, dtype=torch.long), "token_type_ids": torch.zeros(n, T, dtype=torch.long),
             "labels": torch.tensor(np.arange(n) % 2)}
    return model, data, batch


def per_token_gate_grads(model, batch, layer):
    """Direct: a gate per (example, token, head) on layer `layer`; its gradient is the per-token derivative."""
    H = model.encoder.config.num_attention_heads
    B, T = batch["input_ids"].shape
    gate = torch.ones(B, T, H, 1, requires_grad=True)
    dense = model.encoder.encoder.layer[layer].attention.output.dense
    handle = dense.register_forward_pre_hook(lambda m, a: ((a[0].unflatten(-1, (H, -1)) * gate).flatten(-2),))
    try:
        model.loss(model(batch, "rte"), batch["labels"], "rte").backward()
    finally:
        handle.remove()
        model.zero_grad()
    return gate.grad[..., 0]  # (B, T, H)


def test_per_token_score_matches_a_direct_computation():
    model, data, batch = setup()
    model.eval()
    scores = score_units(model, "rte", data, batch_size=len(data), normalize=False, progress=False)
    for layer in range(2):
        direct = per_token_gate_grads(model, batch, layer).abs().sum(dim=(0, 1))
        np.testing.assert_allclose(scores.attn_heads[layer], direct.numpy(), rtol=1e-5)


def test_with_one_example_of_one_token_the_score_is_the_gate_gradient():
    model, data, batch = setup(n=1, T=1)
    model.eval()
    scores = score_units(model, "rte", data, batch_size=1, granularity="layer", normalize=False, progress=False)
    from mtl_tickets import gates as gating
    from mtl_tickets.gates import EncoderShape, Gates

    g = Gates.ones(EncoderShape.of(model.encoder), "layer", requires_grad=True)
    with gating.applied(model.encoder, g):
        model.loss(model(batch, "rte"), batch["labels"], "rte").backward()
    np.testing.assert_allclose(scores.attn_heads, g.attn_heads.grad.abs().numpy(), rtol=1e-5)
    np.testing.assert_allclose(scores.ffn, g.ffn.grad.abs().numpy(), rtol=1e-5)


def test_neuron_scores_have_the_encoder_shape_and_are_layer_normalised():
    model, data, _ = setup()
    scores = score_units(model, "rte", data, batch_size=4, granularity="neuron", progress=False)
    assert scores.attn_heads.shape == (2, 4) and scores.ffn.shape == (2, 37)
    np.testing.assert_allclose(np.linalg.norm(scores.attn_heads, axis=1), 1.0, rtol=1e-6)
    assert (scores.ffn >= 0).all()


def test_legacy_cumulative_weights_early_batches_more():
    model, data, _ = setup(n=6)
    clean = score_units(model, "rte", data, batch_size=2, normalize=False, progress=False)
    legacy = score_units(model, "rte", data, batch_size=2, normalize=False, legacy_cumulative=True, progress=False)
    per_batch = [score_units(model, "rte", Encoded(data.ids[i * 10:(i + 1) * 10], data.types[:10], np.array([0, 5, 10]),
                                                   data.labels[2 * i:2 * i + 2]), batch_size=2, normalize=False,
                             progress=False).attn_heads for i in range(3)]
    np.testing.assert_allclose(clean.attn_heads, sum(per_batch) / 3, rtol=1e-5)
    np.testing.assert_allclose(legacy.attn_heads, (3 * per_batch[0] + 2 * per_batch[1] + per_batch[2]) / 3, rtol=1e-5)


def live_tensors() -> int:
    gc.collect()
    return sum(issubclass(type(o), torch.Tensor) for o in gc.get_objects())


def test_scoring_leaves_no_activation_behind():
    """A sweep scores in the process that then trains every cell: what scoring held must go with it."""
    model, data, _ = setup()
    before = live_tensors()
    score_units(model, "rte", data, batch_size=4, progress=False)
    assert live_tensors() == before
