"""The adaptive sharing module: initial gates are the tickets, gradients reach the logits and the
affinity, evaluation is binary, the budget holds, TensorBoard shows what it learned."""

import json

import numpy as np
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from mtl_tickets import gates as gating
from mtl_tickets import registry
from mtl_tickets.masks import Ticket, TicketSet
from mtl_tickets.model import MultiTaskModel
from mtl_tickets.sharing import SharingModule
from mtl_tickets.train import train

from .conftest import tiny_encoder, token_batch
from .test_multitask import ticket_file
from .test_train import tiny_config


def tickets():
    rng = np.random.default_rng(2)
    return {t: Ticket(rng.random((2, 4)) > 0.3, rng.random((2, 37)) > 0.4) for t in ("rte", "stsb", "mrpc")}


def test_initial_hard_gates_are_the_tickets():
    start = tickets()
    module = SharingModule(start)
    assert module.tickets() == start
    assert all(v == 0 for c in module.report()["changed"].values() for v in c.values())
    for name, ticket in start.items():
        g = module.hard_gates(name)
        assert torch.equal(g.attn_heads.bool(), torch.as_tensor(ticket.attn_heads))


def test_gradients_reach_gate_logits_and_affinity():
    torch.manual_seed(0)
    module = SharingModule(tickets())
    model = MultiTaskModel(tiny_encoder(), registry.resolve(["rte"]), head_dropout=0.0)
    with gating.applied(model.encoder, module.sampled_gates("rte")):
        loss = model.loss(model(token_batch(), "rte"), torch.tensor([0, 1, 1]), "rte")
    (loss + module.budget_loss("rte")).backward()
    assert module.attn_heads_delta.grad[0].abs().sum() > 0 and module.ffn_delta.grad[0].abs().sum() > 0
    assert module.affinity.grad[0, 1:].abs().sum() > 0  # rte's affinity to the other tasks
    assert module.attn_heads_delta.grad[1:].abs().sum() == 0  # only rte's own logits


def test_gates_are_binary_in_training_and_evaluation():
    module = SharingModule(tickets())
    for gates in (module.sampled_gates("stsb"), module.hard_gates("stsb")):
        for g in (gates.attn_heads, gates.ffn):
            assert set(torch.unique(g).tolist()) <= {0.0, 1.0}


def test_affinity_moves_a_task_toward_another_tasks_ticket():
    start = tickets()
    module = SharingModule(start)
    with torch.no_grad():
        module.affinity[0, 1] = 10.0  # rte fully borrows from stsb
        module.options = type(module.options)(borrow=4.0)
    learned = module.tickets()["rte"]
    agree = lambda a, b: (a.attn_heads == b.attn_heads).mean()  # noqa: E731
    assert agree(learned, start["stsb"]) > agree(start["rte"], start["stsb"])
    changed = module.report()["changed"]["rte"]  # counted against rte's own super ticket
    assert changed["heads_gained"] == int((learned.attn_heads & ~start["rte"].attn_heads).sum()) > 0
    assert changed["heads_dropped"] == int((start["rte"].attn_heads & ~learned.attn_heads).sum())


def test_adaptive_run_keeps_the_budget_and_shows_it_in_tensorboard(tiny_model_dir, glue_slice, tmp_path):
    path = ticket_file(tmp_path / "t.json")
    cfg = tiny_config(tiny_model_dir, glue_slice, tmp_path / "run", "tasks=[rte, stsb]", "sharing=adaptive",
                      f"tickets_file={path}", "train.epochs=3", "train.evals_per_epoch=2")
    result = train(cfg, progress=False)
    report = result.results["sharing"]
    for d in report["density"].values():
        assert abs(d["heads"] - d["target_heads"]) <= 0.02 + 1 / 8  # one head of 8 is 12.5 pp on this tiny encoder
        assert abs(d["ffn"] - d["target_ffn"]) <= 0.02
    learned = TicketSet.load(result.output_dir / "learned_tickets.json")
    assert set(learned.tickets) == {"rte", "stsb"}
    events = EventAccumulator(str(result.output_dir / "tensorboard"), size_guidance={"images": 0, "histograms": 0}).Reload()
    images = set(events.Tags()["images"])
    assert {"sharing/affinity", "sharing/overlap_heads", "sharing/overlap_ffn", "sharing/rte/ticket"} <= images
    assert {"sharing/rte/heads_gained", "sharing/stsb/ffn_dropped"} <= set(events.Tags()["scalars"])
    assert len(events.Images("sharing/affinity")) == len(result.results["history"])  # as it evolves
    assert "sharing/rte/ffn" in events.Tags()["scalars"] and "sharing/jaccard_heads/rte-stsb" in events.Tags()["scalars"]
    assert "sharing/stsb/attn_heads_gate_probability" in events.Tags()["histograms"]
    from mtl_tickets.inference import evaluate_run

    best = json.loads((result.output_dir / "best" / "eval.json").read_text())["tasks"]
    assert evaluate_run(result.output_dir) == best  # the best weights carry the gates they were evaluated with
