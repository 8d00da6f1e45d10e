"""Sliced execution of a fixed ticket agrees with the gated path: forward, loss and the gradient of
every shared parameter, for heads, FFN neurons and whole FFN layers, on tiny BERT, RoBERTa and ELECTRA."""

import numpy as np
import pytest
import torch

from mtl_tickets import gates as gating
from mtl_tickets import registry, sliced
from mtl_tickets.masks import Ticket
from mtl_tickets.model import MultiTaskModel

from .conftest import tiny_encoder, token_batch


def neuron_ticket():
    rng = np.random.default_rng(1)
    heads = rng.random((2, 4)) > 0.4
    heads[0] = [False, False, True, False]  # all but one head
    ffn = rng.random((2, 37)) > 0.5
    ffn[1] = False  # every FFN neuron of layer 1: the output bias stays, as with a zero gate
    return Ticket(heads, ffn)


TICKETS = {
    "neuron": neuron_ticket(),
    "layer": Ticket(np.array([[1, 0, 1, 1], [0, 0, 0, 1]], bool), np.array([False, True])),
    "no heads in a layer": Ticket(np.array([[0, 0, 0, 0], [1, 1, 0, 1]], bool), np.ones((2, 37), bool)),
    "full": Ticket(np.ones((2, 4), bool), np.ones((2, 37), bool)),
}


def tiny_model(family):
    model = MultiTaskModel(tiny_encoder(family), registry.resolve(["rte"]), head_dropout=0.0).train()
    model.reset_task_heads(1)
    return model


def loss_and_grads(model, context):
    """Mean-pooled hidden state, the rte loss and every parameter's gradient (None as zeros)."""
    model.zero_grad(set_to_none=True)
    batch = token_batch()
    with context:
        out = model.encoder(**batch).last_hidden_state
        loss = model.loss(model(batch, "rte"), torch.tensor([0, 1, 1]), "rte")
    loss.backward()
    grads = {n: (p.grad if p.grad is not None else torch.zeros_like(p)).clone() for n, p in model.named_parameters()}
    return out.detach(), loss.detach(), grads


@pytest.mark.parametrize("family", ["bert", "roberta", "electra"])
@pytest.mark.parametrize("name", list(TICKETS))
def test_sliced_agrees_with_gated_forward_loss_and_gradients(family, name):
    model, ticket = tiny_model(family), TICKETS[name]
    gated = loss_and_grads(model, gating.applied(model.encoder, ticket.gates()))
    plan = sliced.SlicedTicket.of(model.encoder, ticket)
    cut = loss_and_grads(model, sliced.applied(model.encoder, plan))
    torch.testing.assert_close(cut[0], gated[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(cut[1], gated[1], rtol=1e-5, atol=1e-6)
    assert cut[2].keys() == gated[2].keys()
    for param in gated[2]:
        torch.testing.assert_close(cut[2][param], gated[2][param], rtol=1e-4, atol=1e-6, msg=param)


@pytest.mark.parametrize("name", list(TICKETS))
def test_sliced_evaluation_without_gradients_agrees_with_gated(name):
    model, ticket = tiny_model("bert").eval(), TICKETS[name]
    batch = token_batch()
    with torch.no_grad(), gating.applied(model.encoder, ticket.gates()):
        gated = model(batch, "rte")
    with torch.inference_mode(), sliced.applied(model.encoder, sliced.SlicedTicket.of(model.encoder, ticket)):
        first, second = model(batch, "rte"), model(batch, "rte")  # the second reuses the gathered slices
    torch.testing.assert_close(first, gated, rtol=1e-5, atol=1e-6)
    assert torch.equal(first, second)


def test_each_layer_computes_only_its_kept_heads_and_neurons():
    model, ticket = tiny_model("bert"), TICKETS["neuron"]
    widths = {}
    hooks = []
    for l, layer in enumerate(model.encoder.encoder.layer):
        for kind, module in (("heads", layer.attention.self), ("ffn", layer.intermediate)):
            record = lambda m, a, out, key=(kind, l): widths.update({key: (out[0] if key[0] == "heads" else out).shape[-1]})
            hooks.append(module.register_forward_hook(record))
    try:
        with sliced.applied(model.encoder, sliced.SlicedTicket.of(model.encoder, ticket)):
            model(token_batch(), "rte")
    finally:
        for hook in hooks:
            hook.remove()
    assert [widths[("heads", l)] for l in range(2)] == [8 * int(h.sum()) for h in ticket.attn_heads]
    assert [widths[("ffn", l)] for l in range(2)] == [int(ticket.ffn[0].sum()), 1]  # layer 1: one silent placeholder


def test_original_modules_and_parameter_names_are_kept_and_restored_even_on_error():
    model = tiny_model("roberta")
    before = dict(model.named_modules())
    names = [n for n, _ in model.named_parameters()]
    plan = sliced.SlicedTicket.of(model.encoder, TICKETS["neuron"])
    with pytest.raises(RuntimeError, match="boom"):
        with sliced.applied(model.encoder, plan):
            assert [n for n, _ in model.named_parameters()] == names  # the same shared Parameters
            assert any(isinstance(m, sliced.SlicedLinear) for m in model.modules())
            raise RuntimeError("boom")
    assert dict(model.named_modules()) == before


def test_through_picks_sliced_for_a_sliced_ticket_and_gates_otherwise():
    model, ticket = tiny_model("bert").eval(), TICKETS["layer"]
    batch = token_batch()
    with torch.no_grad():
        with sliced.through(model.encoder, sliced.SlicedTicket.of(model.encoder, ticket)):
            cut = model(batch, "rte")
        with sliced.through(model.encoder, ticket.gates()):
            gated = model(batch, "rte")
        with sliced.through(model.encoder, None):
            dense = model(batch, "rte")
    torch.testing.assert_close(cut, gated, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(dense, gated)
