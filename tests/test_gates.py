"""Gate invariants (DESIGN.md decision 1) on tiny BERT, RoBERTa and ELECTRA encoders."""

import contextlib
import pytest
import torch

from mtl_tickets import gates as gating
from mtl_tickets.gates import EncoderShape, Gates

from .conftest import token_batch


def hidden(encoder, gates=None, batch=None):
    batch = batch or token_batch()
    with gating.applied(encoder, gates):
        return encoder(**batch).last_hidden_state


def test_all_ones_gates_equal_no_hooks_exactly(any_encoder):
    shape = EncoderShape.of(any_encoder)
    for granularity in ("neuron", "layer"):
        assert torch.equal(hidden(any_encoder), hidden(any_encoder, Gates.ones(shape, granularity)))


@contextlib.contextmanager
def zeroed_columns(linear, columns):
    """Zero some input columns of a Linear inside the block, then restore them."""
    saved = linear.weight.detach().clone()
    with torch.no_grad():
        linear.weight[:, columns] = 0
    try:
        yield
    finally:
        with torch.no_grad():
            linear.weight.copy_(saved)


def test_masked_head_equals_zeroing_its_output_columns(any_encoder):
    shape = EncoderShape.of(any_encoder)
    g = Gates.ones(shape)
    g.attn_heads[1, 2] = 0
    gated = hidden(any_encoder, Gates(attn_heads=g.attn_heads))
    d = shape.hidden // shape.heads
    with zeroed_columns(any_encoder.encoder.layer[1].attention.output.dense, slice(2 * d, 3 * d)):
        torch.testing.assert_close(gated, hidden(any_encoder), rtol=0, atol=1e-6)


def test_masked_ffn_neuron_equals_zeroing_its_weights(tiny_bert):
    g = Gates.ones(EncoderShape.of(tiny_bert))
    g.ffn[0, [3, 5]] = 0
    gated = hidden(tiny_bert, Gates(ffn=g.ffn))
    with zeroed_columns(tiny_bert.encoder.layer[0].output.dense, [3, 5]):
        torch.testing.assert_close(gated, hidden(tiny_bert), rtol=0, atol=1e-6)


def test_masked_ffn_layer_gives_layernorm_of_attention_output(tiny_bert):
    shape = EncoderShape.of(tiny_bert)
    ffn = torch.ones(shape.layers)
    ffn[1] = 0
    seen = {}
    layer = tiny_bert.encoder.layer[1]
    handle = layer.attention.register_forward_hook(lambda m, a, out: seen.update(attn=out[0]))
    try:
        with gating.applied(tiny_bert, Gates(ffn=ffn)):
            out = tiny_bert(**token_batch(), output_hidden_states=True)
    finally:
        handle.remove()
    expected = layer.output.LayerNorm(seen["attn"])
    torch.testing.assert_close(out.hidden_states[2], expected)


def hook_count(model) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_hooks_are_removed_even_on_error(tiny_bert):
    before, hooks = hidden(tiny_bert), hook_count(tiny_bert)
    g = Gates.ones(EncoderShape.of(tiny_bert))
    g.attn_heads.zero_()
    with pytest.raises(RuntimeError):
        with gating.applied(tiny_bert, g):
            raise RuntimeError("boom")
    assert torch.equal(hidden(tiny_bert), before)
    assert hook_count(tiny_bert) == hooks


def test_gate_gradients_are_available(tiny_bert):
    g = Gates.ones(EncoderShape.of(tiny_bert), requires_grad=True)
    hidden(tiny_bert, g).pow(2).sum().backward()
    assert g.attn_heads.grad is not None and g.attn_heads.grad.abs().sum() > 0
    assert g.ffn.grad is not None and g.ffn.grad.abs().sum() > 0


def test_wrong_gate_shape_is_refused(tiny_bert):
    with pytest.raises(ValueError, match="head gates have shape"):
        hidden(tiny_bert, Gates(attn_heads=torch.ones(3, 4)))


def test_unknown_encoder_family_names_the_fix(tiny_bert):
    tiny_bert.config.model_type = "mystery"
    try:
        with pytest.raises(ValueError, match="MODULE_PATHS"):
            hidden(tiny_bert, Gates.ones(EncoderShape(2, 4, 37, 32)))
    finally:
        tiny_bert.config.model_type = "bert"
