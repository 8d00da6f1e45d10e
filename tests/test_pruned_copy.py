"""A single-task ticket run on a pruned working copy: it steps only what the ticket keeps, follows the
sliced run, saves full-size checkpoints (removed units as pre-trained) and resumes exactly."""

import copy
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from mtl_tickets import checkpoint, export, pruned_copy, registry
from mtl_tickets.build import build_model
from mtl_tickets.config import load_config
from mtl_tickets.masks import Ticket, TicketSet
from mtl_tickets.model import MultiTaskModel
from mtl_tickets.sharing import FixedTickets
from mtl_tickets.train import train

from .conftest import tiny_encoder
from .test_multitask import SHAPE
from .test_train import tiny_config


def ticket(granularity: str) -> Ticket:
    """Layer 0 keeps no head and (per neuron) layer 1 no FFN unit: both need placeholder units."""
    heads = np.array([[0, 0, 0, 0], [1, 0, 1, 1]], bool)
    if granularity == "layer":
        return Ticket(heads, np.array([True, False]))
    ffn = np.random.default_rng(0).random((2, 37)) > 0.4
    ffn[1] = False
    return Ticket(heads, ffn)


def ticket_file(path, granularity: str):
    TicketSet("tiny", SHAPE, {"rte": ticket(granularity)}).save(path)
    return path


@pytest.mark.parametrize("granularity", ["neuron", "layer"])
def test_the_optimizer_steps_as_many_weights_as_the_physically_pruned_encoder_has(granularity):
    model = MultiTaskModel(tiny_encoder(), registry.resolve(["rte"]))
    model.sharing = FixedTickets({"rte": ticket(granularity)})
    pruned = copy.deepcopy(model.encoder)
    export.prune_encoder(pruned, ticket(granularity))
    cfg = load_config(None, [])
    work = pruned_copy.for_run(model, cfg)
    assert work is not None and model.sharing.eval_gates(model.encoder, "rte") is None  # the encoder is the ticket
    assert sum(p.numel() for p in model.encoder.parameters()) == sum(p.numel() for p in pruned.parameters())


def test_full_shape_puts_the_full_linears_and_full_size_optimizer_state_back_and_reads_them_again():
    model = MultiTaskModel(tiny_encoder(), registry.resolve(["rte"]))
    model.sharing = FixedTickets({"rte": ticket("neuron")})
    full = {n: p.detach().clone() for n, p in model.named_parameters()}
    work = pruned_copy.WorkingCopy(model, model.sharing.eval_gates(model.encoder, "rte"))
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    loss = model.encoder(input_ids=torch.tensor([[5, 6, 7]])).last_hidden_state.sum()
    loss.backward()
    optimizer.step()
    after = {n: p.detach().clone() for n, p in model.named_parameters()}
    moments = {n: optimizer.state[p]["exp_avg"].clone() for n, p in model.named_parameters() if p.grad is not None}
    with work.full_shape(optimizer):
        assert {n: p.shape for n, p in model.named_parameters()} == {n: p.shape for n, p in full.items()}
        assert all(optimizer.state[p]["exp_avg"].shape == p.shape for p in model.parameters() if p in optimizer.state)
        state = model.state_dict()
        q = state["encoder.encoder.layer.1.attention.self.query.weight"]
        assert torch.equal(q[8:16], full["encoder.encoder.layer.1.attention.self.query.weight"][8:16])  # head 1: removed
        assert not torch.equal(q[:8], full["encoder.encoder.layer.1.attention.self.query.weight"][:8])  # head 0: trained
    assert any(not torch.equal(before[n], after[n]) for n in after)
    placeholders = tuple(f"encoder.{pair.path}." for pair in work.pairs if pair.pruned.part.placeholder)
    assert len(placeholders) == 4 + 2  # layer 0's attention, layer 1's FFN
    for name, value in model.named_parameters():  # read again: the same pruned weights and state
        assert torch.equal(value, after[name]) or name.startswith(placeholders), name  # placeholders are never kept
        assert name not in moments or torch.equal(optimizer.state[value]["exp_avg"], moments[name]), name


def run(tiny_model_dir, glue_slice, out, tickets, *extra):
    cfg = tiny_config(tiny_model_dir, glue_slice, out, "tasks=[rte]", "sharing=tickets", f"tickets_file={tickets}",
                      "train.epochs=3", "train.weight_decay=0.1", "train.keep_checkpoints=true", *extra)
    return train(cfg, progress=False).output_dir


def last_checkpoint(out):
    path = checkpoint.latest(out / "checkpoints")
    return load_file(str(path / "model.safetensors")), torch.load(path / "trainer.pt", weights_only=True)["optimizer"]


@pytest.mark.parametrize("granularity", ["neuron", "layer"])
def test_a_pruned_copy_run_follows_the_sliced_run_and_saves_full_size_checkpoints(granularity, tiny_model_dir, glue_slice, tmp_path):
    """With dropout and weight decay on: the same draws, the same matmuls, the same elementwise AdamW."""
    tickets = ticket_file(tmp_path / "t.json", granularity)
    runs = {mode: run(tiny_model_dir, glue_slice, tmp_path / mode, tickets, f"train.pruned_copy={mode}") for mode in ("true", "false")}
    (weights, opt), (sliced_weights, sliced_opt) = (last_checkpoint(runs[m]) for m in ("true", "false"))
    assert weights.keys() == sliced_weights.keys()
    worst = max(float((weights[k] - sliced_weights[k]).abs().max()) for k in weights)
    assert worst < 1e-8, f"weights differ by up to {worst}"  # measured: 0 or one weight by 1e-11 (the clip's sum)
    for index, state in sliced_opt["state"].items():
        for key, value in state.items():
            assert opt["state"][index][key].shape == value.shape
            torch.testing.assert_close(opt["state"][index][key], value, rtol=1e-4, atol=1e-7)
    cfg = tiny_config(tiny_model_dir, glue_slice, tmp_path / "x", "tasks=[rte]")
    pretrained = build_model(cfg, registry.resolve(["rte"])).state_dict()
    q = "encoder.encoder.layer.1.attention.self.query.weight"
    assert torch.equal(weights[q][8:16], pretrained[q][8:16])  # head 1 of layer 1: removed, as pre-trained
    assert not torch.equal(weights[q][:8], pretrained[q][:8])  # head 0: trained
    results = [json.loads((runs[m] / "results.json").read_text())["last"]["tasks"]["rte"] for m in ("true", "false")]
    assert results[0].keys() == results[1].keys()
    for split, metrics in results[1].items():
        for metric, value in metrics.items():
            assert results[0][split][metric] == pytest.approx(value, abs=1e-3), (split, metric)


@pytest.mark.parametrize("resume_with", ["true", "false"])
def test_a_pruned_copy_run_resumes_from_its_full_size_checkpoint(resume_with, tiny_model_dir, glue_slice, tmp_path):
    """Stopped after 5 steps and continued (on a working copy again: bit for bit; sliced: within rounding)."""
    tickets = ticket_file(tmp_path / "t.json", "neuron")
    straight = last_checkpoint(run(tiny_model_dir, glue_slice, tmp_path / "straight", tickets))[0]
    run(tiny_model_dir, glue_slice, tmp_path / "stopped", tickets, "train.max_steps=5")
    resumed = last_checkpoint(run(tiny_model_dir, glue_slice, tmp_path / "stopped", tickets, f"train.pruned_copy={resume_with}"))[0]
    worst = max(float((straight[k] - resumed[k]).abs().max()) for k in straight)
    assert worst == 0.0 if resume_with == "true" else worst < 1e-5, f"weights differ by up to {worst}"
