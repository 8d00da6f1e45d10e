"""The gate sources (`model.sharing`) and adaptive sharing: masks start at the super tickets, move when
a unit's gradient keeps favouring it (within about margin / lr steps at the defaults), hold their
budgets, can take units only other tasks' tickets keep, are binary and deterministic in evaluation,
and a real run reports and plots what moved."""

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from mtl_tickets import registry
from mtl_tickets.config import SharingConfig, TrainConfig
from mtl_tickets.gates import Gates
from mtl_tickets.masks import Ticket, TicketSet
from mtl_tickets.model import MultiTaskModel
from mtl_tickets.optim import FrozenSlices, build_optimizer
from mtl_tickets.sharing import AdaptiveSharing, FixedTickets
from mtl_tickets.sliced import SlicedTicket, through
from mtl_tickets.train import train

from .conftest import tiny_encoder, token_batch
from .test_multitask import ticket_file
from .test_train import tiny_config

TASKS = ("rte", "stsb", "mrpc")


def tickets():
    rng = np.random.default_rng(2)
    return {t: Ticket(rng.random((2, 4)) > 0.3, rng.random((2, 37)) > 0.4) for t in TASKS}


def model_with(sharing_of) -> MultiTaskModel:
    """A tiny model whose gate source is `sharing_of(tickets)`, and its optimizer at the defaults."""
    model = MultiTaskModel(tiny_encoder(), registry.resolve(list(TASKS)), head_dropout=0.0)
    model.sharing = sharing_of(tickets())
    return model


def steps_until(sharing: AdaptiveSharing, task: str, loss_of, done, limit: int = 1000) -> int:
    """Optimizer steps (the run's grouping: scores at adaptive.lr, no weight decay) on `loss_of(gates)`
    until `done(sharing)` holds."""
    holder = torch.nn.Module()
    holder.sharing = sharing
    optimizer = build_optimizer(holder, TrainConfig(lr=1e-4), gate_lr=sharing.options.lr)
    for step in range(limit):
        if done(sharing):
            return step
        loss_of(sharing.train_gates(None, task, learn=True)).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    raise AssertionError(f"not done after {limit} steps")


def test_masks_start_at_the_super_tickets_and_nothing_has_moved():
    start = tickets()
    sharing = AdaptiveSharing(start, SharingConfig())
    assert sharing.tickets() == start
    for parts in sharing.report()["per_task"].values():
        for d in parts.values():
            assert d["gained"] == d["dropped"] == d["taken_from_others"] == 0 and d["jaccard_to_start"] == 1.0
            assert d["kept"] == d["target"]


def test_a_helpful_unit_is_switched_on_and_a_harmful_one_off_within_margin_over_lr_steps():
    """rte's ticket drops head (0, 1) and keeps (1, 1); a loss that (1, 1) hurts and (0, 1) helps swaps
    them. Both scores move about lr per step toward each other across a gap of 2 x margin."""
    start = tickets()
    assert not start["rte"].attn_heads[0, 1] and start["rte"].attn_heads[1, 1]
    sharing = AdaptiveSharing(start, SharingConfig())
    steps = steps_until(sharing, "rte", lambda g: g.attn_heads[1, 1] - g.attn_heads[0, 1],
                        lambda s: s.tickets()["rte"].attn_heads[0, 1])
    stated = math.ceil(sharing.options.margin / sharing.options.lr)  # 10 at the defaults
    assert stated - 5 <= steps <= stated + 5
    learned = sharing.tickets()["rte"]
    assert not learned.attn_heads[1, 1] and learned.attn_heads.sum() == start["rte"].attn_heads.sum()
    assert (learned.attn_heads != start["rte"].attn_heads).sum() == 2  # exactly one swap
    assert sharing.tickets()["stsb"] == start["stsb"]  # another task's mask is not touched


def test_densities_hold_their_targets_under_any_gradient():
    """A fixed random gradient on every unit: each removed unit it favours swaps with a kept unit it
    disfavours, as many as the smaller of the two sets, and every count stays at its target."""
    start = tickets()
    sharing = AdaptiveSharing(start, SharingConfig(lr=0.2))
    torch.manual_seed(0)
    w = torch.randn(start["rte"].ffn.shape)
    kept = torch.as_tensor(start["rte"].ffn)
    swaps = min(int((~kept & (w < 0)).sum()), int((kept & (w > 0)).sum()))
    steps_until(sharing, "rte", lambda g: (g.ffn * w).sum() - g.attn_heads.sum(),
                lambda s: s.report()["per_task"]["rte"]["ffn"]["gained"] == swaps, limit=50)
    for name, parts in sharing.report()["per_task"].items():
        for part, d in parts.items():
            assert d["kept"] == d["target"] == int(getattr(start[name], part).sum()), (name, part)
            assert d["gained"] == d["dropped"]


def test_a_task_takes_a_unit_only_another_tasks_ticket_keeps_unless_borrowing_is_off():
    start = {"rte": Ticket(np.array([[True, False], [True, True]]), np.ones((2, 3), bool)),
             "stsb": Ticket(np.array([[False, True], [True, True]]), np.ones((2, 3), bool))}
    wants = lambda g: g.attn_heads[0, 0] - g.attn_heads[0, 1]  # noqa: E731  rte prefers stsb's head (0, 1) to its own (0, 0)
    sharing = AdaptiveSharing(start, SharingConfig())
    steps_until(sharing, "rte", wants, lambda s: s.tickets()["rte"].attn_heads[0, 1])
    report = sharing.report()
    assert report["per_task"]["rte"]["attn_heads"]["taken_from_others"] == 1
    assert report["taken"]["attn_heads"] == [[0, 1], [0, 0]]  # rte took one head from stsb's ticket
    assert report["jaccard_change"]["attn_heads"][0][1] == 1.0 - 2 / 4  # now rte keeps exactly stsb's heads

    closed = AdaptiveSharing(start, SharingConfig(borrow=False))
    with pytest.raises(AssertionError, match="not done"):
        steps_until(closed, "rte", wants, lambda s: s.tickets()["rte"].attn_heads[0, 1], limit=300)


def test_evaluation_gates_are_binary_deterministic_and_sliced_by_default():
    gated = model_with(lambda t: AdaptiveSharing(t, SharingConfig(), use_sliced=False))
    first, again = gated.sharing.eval_gates(gated.encoder, "stsb"), gated.sharing.eval_gates(gated.encoder, "stsb")
    for a, b in zip((first.attn_heads, first.ffn), (again.attn_heads, again.ffn), strict=True):
        assert set(torch.unique(a).tolist()) <= {0.0, 1.0} and torch.equal(a, b) and not a.requires_grad
    model = model_with(lambda t: AdaptiveSharing(t, SharingConfig()))
    assert isinstance(model.sharing.eval_gates(model.encoder, "stsb"), SlicedTicket)
    assert isinstance(model.sharing.train_gates(model.encoder, "stsb", learn=True), Gates)  # learning needs the gated path


def test_every_unit_score_of_the_steps_task_gets_its_gradient_and_no_other_task_does():
    model = model_with(lambda t: AdaptiveSharing(t, SharingConfig()))
    gates = model.sharing.train_gates(model.encoder, "rte", learn=True)
    with through(model.encoder, gates):
        model.loss(model(token_batch(), "rte"), torch.tensor([0, 1, 1]), "rte").backward()
    scores = model.sharing.scores
    removed = ~torch.as_tensor(tickets()["rte"].ffn)
    assert scores["rte"].ffn.grad[removed].abs().gt(0).float().mean() > 0.9  # removed units see their gradient too
    assert scores["rte"].attn_heads.grad.abs().sum() > 0
    assert scores["stsb"].ffn.grad is None and scores["mrpc"].attn_heads.grad is None  # Adam skips them


def test_masks_learn_only_between_warmup_and_cooldown():
    sharing = AdaptiveSharing(tickets(), SharingConfig(warmup=0.2, cooldown=0.3))
    assert [sharing.learns_at(s, 10) for s in range(10)] == [False] * 2 + [True] * 5 + [False] * 3
    assert not FixedTickets(tickets()).learns_at(5, 10)


def test_sharing_loss_pulls_a_tasks_scores_toward_the_others():
    sharing = AdaptiveSharing(tickets(), SharingConfig(share_weight=1.0))
    sharing.penalty("rte").backward()
    own = sharing.scores["rte"].attn_heads
    others = torch.stack([sharing.scores[t].attn_heads.detach() for t in ("stsb", "mrpc")]).mean(0)
    differs = own.detach() != others
    assert torch.equal(torch.sign(own.grad[differs]), torch.sign(own.detach() - others)[differs])
    assert AdaptiveSharing(tickets(), SharingConfig()).penalty("rte") is None  # off by default


def test_fixed_tickets_freeze_what_they_remove_with_the_optimizer_state_only_where_another_task_trains_it():
    model = model_with(lambda t: FixedTickets(t))
    frozen = model.sharing.frozen(model.encoder, "rte")
    rte, others = tickets()["rte"], [t for name, t in tickets().items() if name != "rte"]
    for layer in (0, 1):
        ffn_in = {s.with_state: s.index.tolist() for s in frozen
                  if s.param is model.encoder.encoder.layer[layer].intermediate.dense.weight}
        by_another = np.logical_or.reduce([t.ffn[layer] for t in others])
        assert ffn_in[True] == np.flatnonzero(~rte.ffn[layer] & by_another).tolist()
        assert ffn_in[False] == np.flatnonzero(~rte.ffn[layer] & ~by_another).tolist()  # no task trains these
    assert model.sharing.frozen(model.encoder, "rte") is frozen  # built once per ticket
    model.sharing = FixedTickets({"rte": rte}, tasks=["rte", "stsb"])  # stsb has no ticket: it trains every unit
    assert all(s.with_state for s in model.sharing.frozen(model.encoder, "rte"))
    adaptive = model_with(lambda t: AdaptiveSharing(t, SharingConfig()))
    assert all(s.with_state for s in adaptive.sharing.frozen(adaptive.encoder, "rte"))  # its units move


def test_freezing_only_the_weights_of_units_no_task_trains_is_exact():
    """Units no task's ticket keeps are frozen by their weights alone; AdamW steps with weight decay,
    alternating two tasks, end bit for bit where freezing their optimizer state too ends, and that state
    stays zero (units one task removes and the other trains keep their state frozen as before)."""
    both = {t: tickets()[t] for t in ("rte", "mrpc")}
    finals = {}
    for with_state in (False, True):
        model = MultiTaskModel(tiny_encoder(), registry.resolve(list(both)), head_dropout=0.0)
        model.sharing = FixedTickets(both)
        frozen = {t: [dataclasses.replace(s, with_state=with_state or s.with_state)
                      for s in model.sharing.frozen(model.encoder, t)] for t in both}
        assert with_state or {s.with_state for s in frozen["rte"]} == {True, False}
        optimizer = build_optimizer(model, TrainConfig(lr=1e-2, weight_decay=0.1))
        for step in range(4):
            task = ("rte", "mrpc")[step % 2]
            with through(model.encoder, model.sharing.train_gates(model.encoder, task, learn=False)):
                model.loss(model(token_batch(), task), torch.tensor([0, 1, step % 2]), task).backward()
            with FrozenSlices(optimizer, frozen[task]):
                optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        finals[with_state] = model.state_dict()
        untrained = [s for s in model.sharing.frozen(model.encoder, "rte") if not s.with_state]  # no task keeps them
        for s in untrained:
            for moment in ("exp_avg", "exp_avg_sq"):
                assert not optimizer.state[s.param][moment].index_select(s.dim, s.index).any()
    assert all(torch.equal(finals[False][k], finals[True][k]) for k in finals[True])
    pretrained = tiny_encoder().state_dict()
    assert not all(torch.equal(finals[False][f"encoder.{k}"], v) for k, v in pretrained.items())  # kept units train


@pytest.mark.slow
def test_adaptive_run_moves_masks_holds_budgets_and_shows_it_in_tensorboard(tiny_model_dir, glue_slice, tmp_path):
    path = ticket_file(tmp_path / "t.json")
    cfg = tiny_config(tiny_model_dir, glue_slice, tmp_path / "run", "tasks=[rte, stsb]", "sharing=adaptive",
                      f"tickets_file={path}", "train.epochs=3", "train.evals_per_epoch=2", "adaptive.lr=0.1",
                      "adaptive.margin=0.1", "adaptive.warmup=0", "adaptive.cooldown=0")
    result = train(cfg, progress=False)
    start = TicketSet.load(path).tickets
    learned = TicketSet.load(result.output_dir / "learned_tickets.json").tickets
    report = result.results["sharing"]
    moved = sum(d["gained"] for parts in report["per_task"].values() for d in parts.values())
    assert moved > 0 and any(learned[t] != start[t] for t in learned)
    for t, parts in report["per_task"].items():
        for part, d in parts.items():
            assert d["kept"] == d["target"] == int(getattr(start[t], part).sum())
            assert d["gained"] == int((getattr(learned[t], part) & ~getattr(start[t], part)).sum())
    events = EventAccumulator(str(result.output_dir / "tensorboard"), size_guidance={"images": 0, "histograms": 0}).Reload()
    images = set(events.Tags()["images"])
    assert {"sharing/overlap_attn_heads", "sharing/overlap_change_ffn", "sharing/taken_ffn", "sharing/rte/ticket"} <= images
    assert len(events.Images("sharing/overlap_ffn")) == len(result.results["history"])  # at every evaluation
    assert all(set(r["sharing"]["per_task"]) == {"rte", "stsb"} for r in result.results["history"])  # results.json too
    scalars = set(events.Tags()["scalars"])
    assert {"sharing/rte/ffn/gained", "sharing/stsb/attn_heads/near_boundary", "sharing/jaccard_ffn/rte-stsb"} <= scalars
    assert "sharing/stsb/ffn_score" in events.Tags()["histograms"]
    from mtl_tickets.inference import evaluate_run

    best = json.loads((result.output_dir / "best" / "eval.json").read_text())["tasks"]
    assert evaluate_run(result.output_dir) == best  # the best weights carry the scores they were evaluated with


@pytest.mark.parametrize("borrow", [True, False])
def test_random_swaps_flip_as_many_units_at_random_within_the_candidates(borrow):
    from mtl_tickets.sharing import own_or_free, random_swaps

    start = tickets()
    learned = AdaptiveSharing(start, SharingConfig(lr=0.2, borrow=borrow))
    torch.manual_seed(0)
    w = torch.randn(start["rte"].ffn.shape)
    steps_until(learned, "rte", lambda g: (g.ffn * w).sum() + (g.attn_heads * w[:, :4]).sum(),
                lambda s: s.report()["per_task"]["rte"]["ffn"]["gained"] > 0, limit=50)
    learned_rte = learned.tickets()["rte"]
    candidates = own_or_free("rte", start) if not borrow else Ticket(np.ones((2, 4), bool), np.ones((2, 37), bool))
    draws = [random_swaps(start["rte"], learned_rte, candidates, np.random.default_rng(seed)) for seed in (1, 2)]
    for swapped in draws:
        for part in ("attn_heads", "ffn"):
            was, now, rand, allowed = (getattr(t, part) for t in (start["rte"], learned_rte, swapped, candidates))
            assert (rand & ~was).sum() == (now & ~was).sum() == (was & ~rand).sum()
            assert not (rand & ~allowed).any() and not (now & ~allowed).any()
    assert draws[0] != draws[1]  # drawn, not learned
