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
            def record(m, a, out, key=(kind, l)):
                return widths.update({key: (out[0] if key[0] == "heads" else out).shape[-1]})
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


def final_weights(run_dir):
    from safetensors.torch import load_file

    from mtl_tickets import checkpoint

    return load_file(str(checkpoint.latest(run_dir / "checkpoints") / "model.safetensors"))


@pytest.mark.parametrize("granularity", ["neuron", "layer"])
def test_a_sliced_ticket_run_ends_with_the_gated_runs_weights(granularity, tiny_model_dir, glue_slice, tmp_path):
    """The recipe end to end (frozen slices, AdamW, clipping, evaluation): only float rounding differs."""
    import json

    from mtl_tickets.train import train

    from .test_multitask import ticket_file
    from .test_train import tiny_config

    tickets = ticket_file(tmp_path / "t.json", granularity)
    runs = {}
    for mode in ("true", "false"):
        cfg = tiny_config(tiny_model_dir, glue_slice, tmp_path / mode, "tasks=[rte, stsb]", "sharing=tickets",
                          f"tickets_file={tickets}", "model.dropout=0", "model.head_dropout=0", f"train.sliced={mode}",
                          "train.keep_checkpoints=true")
        runs[mode] = train(cfg, progress=False).output_dir
    cut, gated = final_weights(runs["true"]), final_weights(runs["false"])
    assert cut.keys() == gated.keys()
    worst = max(float((cut[k] - gated[k]).abs().max()) for k in cut)
    assert worst < 1e-4, f"weights differ by up to {worst}"
    scores = [json.loads((runs[m] / "results.json").read_text())["last"]["tasks"] for m in ("true", "false")]
    for task, splits in scores[1].items():
        for split, metrics in splits.items():
            for metric, value in metrics.items():
                assert scores[0][task][split][metric] == pytest.approx(value, abs=1e-3), (task, metric)


@pytest.mark.slow
@pytest.mark.parametrize("tasks", ["rte,stsb", "rte"])
def test_a_sliced_two_process_run_matches_the_gated_one_process_run(tasks, tiny_model_dir, glue_slice, tmp_path):
    """torchrun: the gradient all-reduce runs over the full-size parameters, as without slicing, or (one
    task) over the pruned working copy's."""
    import os
    import subprocess
    import sys

    from .test_distributed import TORCHRUN, args, free_port
    from .test_multitask import ticket_file

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    tickets = ["--set", "sharing=tickets", "--set", f"tickets_file={ticket_file(tmp_path / 't.json')}"]

    def run_args(out):
        cli = args(tiny_model_dir, glue_slice, out)
        cli[cli.index("--task") + 1] = tasks
        return [*cli, *tickets]

    single = subprocess.run([sys.executable, "-m", "mtl_tickets.cli", *run_args(tmp_path / "one"), "--set", "train.sliced=false"],
                            capture_output=True, text=True, env=env, timeout=300)
    assert single.returncode == 0, single.stderr[-3000:]
    multi = subprocess.run([str(TORCHRUN), "--nproc-per-node", "2", "--master-port", str(free_port()), "-m", "mtl_tickets.cli",
                            *run_args(tmp_path / "two")], capture_output=True, text=True, env=env, timeout=300)
    assert multi.returncode == 0, multi.stderr[-3000:]
    a, b = final_weights(tmp_path / "one"), final_weights(tmp_path / "two")
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)  # the tolerance of test_distributed
    mean = sum(float((a[k] - b[k]).abs().sum()) for k in a) / sum(a[k].numel() for k in a)
    assert worst < 1e-3 and mean < 1e-6, f"weights differ by up to {worst} (mean {mean})"
