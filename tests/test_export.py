"""Physically pruned export: round trip with the masked model's predictions, per-layer sizes, edge tickets."""

import json

import numpy as np
import pytest
import torch

from mtl_tickets import gates as gating
from mtl_tickets import registry
from mtl_tickets.encoders import load_tokenizer
from mtl_tickets.export import export, export_run, load_exported
from mtl_tickets.masks import Ticket, TicketSet
from mtl_tickets.model import MultiTaskModel

from .conftest import tiny_encoder, token_batch
from .test_cli import cli
from .test_multitask import ticket_file
from .test_train import tiny_config


def tiny_model():
    model = MultiTaskModel(tiny_encoder(), registry.resolve(["rte"]), head_dropout=0.0).eval()
    model.reset_task_heads(1)
    return model


def neuron_ticket():
    rng = np.random.default_rng(1)
    heads = rng.random((2, 4)) > 0.4
    heads[0] = [False, False, True, False]  # all but one head
    ffn = rng.random((2, 37)) > 0.5
    ffn[1] = False  # every FFN neuron of layer 1
    return Ticket(heads, ffn)


TICKETS = {
    "neuron": neuron_ticket(),
    "layer": Ticket(np.array([[1, 0, 1, 1], [0, 0, 0, 1]], bool), np.array([False, True])),
    "no heads in a layer": Ticket(np.array([[0, 0, 0, 0], [1, 1, 0, 1]], bool), np.ones((2, 37), bool)),
}


@pytest.mark.parametrize("name", list(TICKETS))
def test_export_round_trip_predicts_like_the_masked_model(name, tiny_model_dir, tmp_path):
    model, ticket = tiny_model(), TICKETS[name]
    batch = token_batch()
    with gating.applied(model.encoder, ticket.gates()):
        masked = model(batch, "rte")
    path = export(model, "rte", ticket, load_tokenizer(str(tiny_model_dir)), tmp_path / "out", "tiny")
    loaded = load_exported(path)
    torch.testing.assert_close(loaded.model(batch, "rte"), masked, rtol=1e-4, atol=1e-5)
    with gating.applied(model.encoder, ticket.gates()):  # the source model is left as it was
        torch.testing.assert_close(model(batch, "rte"), masked)
    meta = json.loads((path / "export.json").read_text())
    expected_heads = [max(1, int(h.sum())) for h in ticket.attn_heads]
    assert [layer["heads"] for layer in meta["layers"]] == expected_heads
    layer0 = loaded.model.encoder.encoder.layer[0]
    assert layer0.attention.self.query.weight.shape[0] == expected_heads[0] * 8
    assert loaded.ticket == ticket and loaded.task == "rte"


def test_pruned_model_is_smaller():
    model, ticket = tiny_model(), TICKETS["neuron"]
    before = sum(p.numel() for p in model.encoder.encoder.parameters())
    from mtl_tickets.export import prune_encoder

    prune_encoder(model.encoder, ticket)
    after = sum(p.numel() for p in model.encoder.encoder.parameters())
    from mtl_tickets.gates import EncoderShape

    shape = EncoderShape(2, 4, 37, 32)
    silent = 32 + 1 + 32  # the zero placeholder neuron of layer 1, whose FFN lost every neuron
    assert after == ticket.kept_params(shape) + silent and after < before


@pytest.mark.parametrize("name, side", [("neuron", 0), ("neuron", 1), ("layer", 0)])
def test_zeroing_either_side_of_the_slices_units_own_equals_gating_them(name, side, any_encoder):
    """The rows a unit owns (Q, K, V, FFN in, with biases) and its columns (attention and FFN out) each
    silence it on their own; a whole FFN layer's rows include the output bias."""
    from mtl_tickets.pruning import owned_slices

    ticket, batch = TICKETS[name], token_batch()
    with gating.applied(any_encoder, ticket.gates()):
        gated = any_encoder(**batch).last_hidden_state
    with torch.no_grad():
        for param, dim, index in owned_slices(any_encoder, ticket.attn_heads, ticket.ffn):
            if dim == side:
                any_encoder.get_parameter(param).index_fill_(dim, torch.as_tensor(index), 0.0)
    torch.testing.assert_close(any_encoder(**batch).last_hidden_state, gated, rtol=1e-4, atol=1e-5)


def test_pruning_drops_exactly_the_slices_removed_units_own(any_encoder):
    from mtl_tickets.export import prune_encoder
    from mtl_tickets.pruning import owned_slices

    ticket = Ticket(np.array([[1, 0, 1, 1], [0, 1, 0, 1]], bool), np.random.default_rng(2).random((2, 37)) > 0.5)
    before = sum(p.numel() for p in any_encoder.encoder.parameters())
    owned = sum(index.size * any_encoder.get_parameter(param).shape[1 - dim] if param.endswith("weight") else index.size
                for param, dim, index in owned_slices(any_encoder, ticket.attn_heads, ticket.ffn))
    prune_encoder(any_encoder, ticket)
    assert before - sum(p.numel() for p in any_encoder.encoder.parameters()) == owned


@pytest.mark.slow
def test_export_cli_from_a_ticket_run(tiny_model_dir, glue_slice, tmp_path):
    from mtl_tickets.train import train

    cfg = tiny_config(tiny_model_dir, glue_slice, tmp_path / "run", "tasks=[rte, stsb]", "sharing=tickets",
                      f"tickets_file={ticket_file(tmp_path / 't.json')}", "train.max_steps=2")
    run = train(cfg, progress=False).output_dir
    result = cli("export", run, "--task", "stsb", "--out", tmp_path / "exported")
    assert result.returncode == 0, result.stderr
    assert "heads per layer 3/3" in result.stdout
    assert load_exported(tmp_path / "exported").task == "stsb"


@pytest.mark.slow
def test_export_of_an_adaptive_run_predicts_exactly_what_evaluate_does(tiny_model_dir, glue_slice, tmp_path):
    """The exported model is pruned to the learned ticket its best weights evaluate through (not the ungated
    encoder, nor the super ticket); learned_tickets.json holds the masks at the end of training."""
    from mtl_tickets.data import load_task
    from mtl_tickets.evaluation import predict
    from mtl_tickets.inference import load_run
    from mtl_tickets.train import train

    start_file = ticket_file(tmp_path / "t.json")
    cfg = tiny_config(tiny_model_dir, glue_slice, tmp_path / "run", "tasks=[rte, stsb]", "sharing=adaptive",
                      f"tickets_file={start_file}", "train.epochs=2", "adaptive.lr=0.5", "adaptive.margin=0.05",
                      "adaptive.warmup=0", "adaptive.cooldown=0")
    run = train(cfg, progress=False).output_dir
    run_cfg, model = load_run(run)
    learned = model.sharing.tickets()["stsb"]
    assert learned != TicketSet.load(start_file).tickets["stsb"]  # the masks moved
    export_run(run, "stsb", tmp_path / "exported")
    exported = load_exported(tmp_path / "exported")
    assert exported.ticket == learned
    dev = load_task(registry.all_tasks()["stsb"], load_tokenizer(run_cfg.model.name), run_cfg.data).dev["dev"]
    np.testing.assert_allclose(predict(exported.model, dev, "stsb", 8), predict(model, dev, "stsb", 8), atol=1e-5)
