"""Joint training with ticket sharing: masked optimizer steps, and a smoke grid of
granularity x sharing mode x sampler."""

import itertools
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from mtl_tickets import checkpoint, registry
from mtl_tickets.gates import EncoderShape
from mtl_tickets.masks import Ticket, TicketSet
from mtl_tickets.build import build_model
from mtl_tickets.train import train

from .test_train import tiny_config

SHAPE = EncoderShape(layers=2, heads=4, ffn=37, hidden=32)


def ticket_file(path, granularity="neuron", tasks=("rte", "stsb")):
    rng = np.random.default_rng(0)
    tickets = {}
    for i, task in enumerate(tasks):
        heads = np.ones((2, 4), bool)
        heads[0, i] = heads[1, 3] = False  # head (1, 3) is masked for every task
        ffn = rng.random((2, 37) if granularity == "neuron" else 2) > 0.3
        if granularity == "layer":
            ffn[:] = [True, False]
        tickets[task] = Ticket(heads, ffn)
    TicketSet("tiny", SHAPE, tickets).save(path)
    return path


@pytest.mark.parametrize("mode", ["freeze", "optimizer"])
def test_units_masked_for_every_task_move_only_without_frozen_steps(mode, tiny_model_dir, glue_slice, tmp_path):
    cfg = tiny_config(tiny_model_dir, glue_slice, tmp_path / "run", "tasks=[rte, stsb]", "sharing=tickets",
                      f"tickets_file={ticket_file(tmp_path / 't.json')}", f"train.masked_updates={mode}",
                      "train.weight_decay=0.1", "train.keep_checkpoints=true")
    out = train(cfg, progress=False).output_dir
    trained = load_file(str(checkpoint.latest(out / "checkpoints") / "model.safetensors"))
    pretrained = build_model(cfg, registry.resolve(["rte"])).state_dict()
    q = "encoder.encoder.layer.1.attention.self.query.weight"
    masked_rows = slice(3 * 8, 4 * 8)
    same = torch.equal(trained[q][masked_rows], pretrained[q][masked_rows])
    assert same == (mode == "freeze")
    assert not torch.equal(trained[q][:8], pretrained[q][:8])  # kept heads train


GRID = list(itertools.product(["neuron", "layer"], ["full", "tickets"], ["proportional", "mtdnn", "annealed", "dynamic"]))


@pytest.mark.parametrize("granularity,sharing,sampler", GRID, ids=["-".join(g) for g in GRID])
def test_joint_training_smoke(granularity, sharing, sampler, tiny_model_dir, glue_slice, tmp_path):
    extra = ["tasks=[rte, stsb]", f"train.sampler={sampler}", "train.max_steps=4", f"sharing={sharing}"]
    if sharing == "tickets":
        extra.append(f"tickets_file={ticket_file(tmp_path / 't.json', granularity)}")
    result = train(tiny_config(tiny_model_dir, glue_slice, tmp_path / "run", *extra), progress=False)
    assert result.results["steps"] == 4 and sum(result.results["task_steps"].values()) == 4
    if sharing == "tickets":
        assert TicketSet.load(result.output_dir / "tickets.json").tickets["rte"].granularity == granularity


def test_a_ticket_file_without_a_task_is_refused(tiny_model_dir, glue_slice, tmp_path):
    from mtl_tickets.schema import ConfigError

    path = ticket_file(tmp_path / "t.json", tasks=("rte",))
    cfg = tiny_config(tiny_model_dir, glue_slice, tmp_path / "run", "tasks=[rte, stsb]", "sharing=tickets", f"tickets_file={path}")
    with pytest.raises(ConfigError, match=r"has no ticket for stsb \(it has rte\)"):
        train(cfg, progress=False)


def test_evaluate_applies_the_runs_tickets(tiny_model_dir, glue_slice, tmp_path):
    from mtl_tickets.inference import evaluate_run

    cfg = tiny_config(tiny_model_dir, glue_slice, tmp_path / "run", "tasks=[rte, stsb]", "sharing=tickets",
                      f"tickets_file={ticket_file(tmp_path / 't.json')}")
    result = train(cfg, progress=False)
    best = json.loads((result.output_dir / "best" / "eval.json").read_text())["tasks"]
    assert evaluate_run(result.output_dir) == best
