"""The super-ticket recipe end to end on a tiny encoder, rewinding, and the tickets CLI."""

import csv
import json
import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from mtl_tickets import checkpoint, tickets
from mtl_tickets.build import build_model
from mtl_tickets.config import load_config
from mtl_tickets.inference import load_run
from mtl_tickets.gates import EncoderShape
from mtl_tickets.masks import Ticket, TicketSet
from mtl_tickets.pruning import owned_slices
from mtl_tickets.schema import ConfigError
from mtl_tickets.stats import PairedDifference
from mtl_tickets.tickets import Cell, confirm_summary, confirm_with_seeds, curve_rows, find_super_tickets, write_curve

from .test_cli import cli
from .test_gpu_path import REPO, run_python
from .test_multitask import SHAPE


def sweep_config(tiny_model_dir, glue_slice, out, *extra):
    return load_config(None, [
        f"model.name={tiny_model_dir}", f"data.glue_dir={glue_slice}", f"output_dir={out}",
        f"data.cache_dir={out.parent / 'cache'}", "data.max_seq_len=32", "train.batch_size=8", "train.epochs=2",
        "tasks=[rte]", "tickets.sparsities=[0.25, 0.5]", "tickets.control_sparsities=[0.5]",
        "tickets.confirm_seeds=[2, 3]",  # never train.seed (1), the grid's
        "train.process_per_run=false", *extra,  # test_fresh_process.py trains runs in their own processes
    ])


@pytest.mark.slow
def test_sweep_writes_tickets_curves_and_board(tiny_model_dir, glue_slice, tmp_path):
    out = tmp_path / "sweep"
    ticket_set = find_super_tickets(sweep_config(tiny_model_dir, glue_slice, out), progress=False)
    ticket = ticket_set.tickets["rte"]
    assert ticket.info["kind"] in ("full", "winning")
    kinds = {(c["kind"], c["sparsity"]) for c in ticket.info["curve"]}
    assert kinds == {("full", 0.0), ("winning", 0.25), ("winning", 0.5), ("random", 0.5), ("losing", 0.5)}
    confirm = ticket.info["confirm"]
    assert set(confirm) == {"full", "winning"} and confirm["full"]["seeds"] == confirm["winning"]["seeds"] == [2, 3]
    best_winning = max((c for c in ticket.info["curve"] if c["kind"] == "winning"), key=lambda c: c["dev_best"])
    assert confirm["winning"]["sparsity"] == best_winning["sparsity"]
    winning = f"winning-{best_winning['sparsity']:g}"  # the reruns are runs of their own, apart from the grid's seed 1
    assert {"full-s2", "full-s3", f"{winning}-s2", f"{winning}-s3"} <= {p.name for p in (out / "rte").iterdir()}
    assert confirm["winning"]["vs_full"] == asdict(PairedDifference.of(confirm["winning"]["scores"], confirm["full"]["scores"]))
    loaded = TicketSet.load(out / "tickets.json")
    assert loaded.tickets["rte"] == ticket
    rows = list(csv.DictReader((out / "rte_curve.csv").open()))
    assert len(rows) == 5 and float(rows[0]["kept"]) <= 1
    assert (out / "rte_curve.png").stat().st_size > 1000
    points, reruns = curve_rows(ticket.info)  # the figure draws the seed reruns where their cells sit
    assert len(points) == 5
    winning_rerun = next(r for r in reruns if r["kind"] == "winning")
    assert winning_rerun["kept"] == best_winning["kept"] and winning_rerun["mean"] == confirm["winning"]["mean"]
    events = EventAccumulator(str(out / "tensorboard"), size_guidance={"images": 0, "histograms": 0}).Reload()
    assert {"tickets/rte/phase_transition", "tickets/rte/super_ticket"} <= set(events.Tags()["images"])
    assert "importance/rte/attn_heads" in events.Tags()["histograms"]
    # a second call reuses every finished cell (no new run directories, same answer)
    runs = sorted(p.name for p in (out / "rte").iterdir())
    assert find_super_tickets(sweep_config(tiny_model_dir, glue_slice, out), progress=False).tickets["rte"] == ticket
    assert sorted(p.name for p in (out / "rte").iterdir()) == runs


@pytest.mark.slow
def test_ticket_cells_train_through_their_mask(tiny_model_dir, glue_slice, tmp_path):
    out = tmp_path / "sweep"
    find_super_tickets(sweep_config(tiny_model_dir, glue_slice, out, "tickets.kinds=[losing]",
                                    "tickets.confirm_seeds=[]", "train.keep_checkpoints=true"), progress=False)
    ticket = TicketSet.load(out / "rte" / "tickets" / "losing-0.5.json").tickets["rte"]
    weights = load_file(str(checkpoint.latest(out / "rte" / "losing-0.5-s1" / "checkpoints") / "model.safetensors"))
    encoder = build_model(sweep_config(tiny_model_dir, glue_slice, out), []).encoder
    pretrained = encoder.state_dict()
    # train.masked_updates: freeze (the default, DESIGN.md decision 6): the weights of the ticket's
    # masked heads and FFN units are never stepped, so they stay the pre-trained ones bit for bit
    owned = owned_slices(encoder, ticket.attn_heads, ticket.ffn)
    assert owned
    for name, dim, index in owned:
        index = torch.as_tensor(index)
        assert torch.equal(weights[f"encoder.{name}"].index_select(dim, index), pretrained[name].index_select(dim, index)), name
    assert not all(torch.equal(weights[f"encoder.{name}"], pretrained[name]) for name, _, _ in owned)  # kept units train


def test_rewinding_restores_the_pretrained_weights_bit_for_bit(tiny_model_dir, glue_slice, tmp_path):
    cfg = sweep_config(tiny_model_dir, glue_slice, tmp_path / "x")
    from mtl_tickets import registry

    first = build_model(cfg, registry.resolve(["rte"]))
    with torch.no_grad():
        for p in first.parameters():
            p.add_(1.0)  # "fine-tune"
    rewound = build_model(cfg, registry.resolve(["rte"])).state_dict()
    stored = load_file(str(tiny_model_dir / "model.safetensors"))
    for name, tensor in stored.items():
        assert torch.equal(rewound[f"encoder.{name}"], tensor), name
    again = build_model(cfg, registry.resolve(["rte"])).state_dict()
    assert torch.equal(again["task_heads.rte.linear.weight"], rewound["task_heads.rte.linear.weight"])


@pytest.mark.slow
def test_tickets_show_and_import_cli(tmp_path, tiny_model_dir):
    (tmp_path / "h.json").write_text(json.dumps({"0": {"1": [0, 3]}}))
    (tmp_path / "f.json").write_text(json.dumps({"0": [0]}))
    result = cli("tickets", "import", "--heads", tmp_path / "h.json", "--ffn", tmp_path / "f.json", "--tasks", "rte",
                 "--model", tiny_model_dir, "--out", tmp_path / "t.json")
    assert result.returncode == 0, result.stderr
    shown = cli("tickets", "show", tmp_path / "t.json")
    assert shown.returncode == 0, shown.stderr
    assert "layer  0  heads ####  FFN   0%" in shown.stdout and "layer  1  heads .##.  FFN 100%" in shown.stdout
    assert "heads kept 75%, FFN kept 50%" in shown.stdout
    again = cli("tickets", "import", "--heads", tmp_path / "h.json", "--tasks", "mrpc", "--model", tiny_model_dir,
                "--out", tmp_path / "m.json")
    assert again.returncode == 0, again.stderr
    merged = cli("tickets", "merge", tmp_path / "t.json", tmp_path / "m.json", "--out", tmp_path / "both.json")
    assert merged.returncode == 0 and "tickets of rte, mrpc" in merged.stdout, merged.stderr
    assert set(TicketSet.load(tmp_path / "both.json").tickets) == {"rte", "mrpc"}
    broken = cli("tickets", "show", tmp_path / "h.json")
    assert broken.returncode == 2 and broken.stderr.startswith("error:") and "Traceback" not in broken.stderr


@pytest.mark.slow
def test_compare_reads_the_sweeps_runs_instead_of_training_again(tiny_model_dir, glue_slice, tmp_path):
    from mtl_tickets.compare import compare

    sweep = tmp_path / "sweep"
    ticket = find_super_tickets(sweep_config(tiny_model_dir, glue_slice, sweep), progress=False).tickets["rte"]
    same = sweep_config(tiny_model_dir, glue_slice, tmp_path / "cmp", f"tickets_file={sweep / 'tickets.json'}",
                        f"data.cache_dir={tmp_path / 'other-cache'}", "compare.seeds=[2, 3]",
                        "compare.contenders=[single_full, single_tickets]")
    rows = {r.contender: r for r in compare(same, progress=False)["per_task"]}
    assert not (tmp_path / "cmp" / "single_full").exists() and not (tmp_path / "cmp" / "single_tickets").exists()
    confirm = ticket.info["confirm"]
    assert rows["single_full"].scores["rte"] == confirm["full"]["scores"]
    assert rows["single_tickets"].scores["rte"] == confirm["full" if ticket.info["kind"] == "full" else "winning"]["scores"]
    other_lr = sweep_config(tiny_model_dir, glue_slice, tmp_path / "cmp2", f"tickets_file={sweep / 'tickets.json'}",
                            "train.lr=2e-4", "compare.seeds=[1]", "compare.contenders=[single_full]")
    compare(other_lr, progress=False)
    assert (tmp_path / "cmp2" / "single_full" / "rte-s1" / "results.json").is_file()
    old_file = json.loads((sweep / "tickets.json").read_text())  # written before tickets recorded sweep_dir
    del old_file["tickets"]["rte"]["sweep_dir"]
    (tmp_path / "old.json").write_text(json.dumps(old_file))
    compare(sweep_config(tiny_model_dir, glue_slice, tmp_path / "cmp-old", f"tickets_file={tmp_path / 'old.json'}",
                         "compare.seeds=[1]", "compare.contenders=[single_full]"), progress=False)
    assert not (tmp_path / "cmp-old" / "single_full").exists()
    sweep.rename(tmp_path / "moved")  # the ticket file finds the sweep's runs beside it, wherever it is
    compare(sweep_config(tiny_model_dir, glue_slice, tmp_path / "cmp-moved", f"tickets_file={tmp_path / 'moved' / 'tickets.json'}",
                         "compare.seeds=[2]", "compare.contenders=[single_full, single_tickets]"), progress=False)
    assert not (tmp_path / "cmp-moved" / "single_full").exists() and not (tmp_path / "cmp-moved" / "single_tickets").exists()


def lean_sweep(tiny_model_dir, glue_slice, out, *extra):
    """The full model and one winning ticket: the fewest cells a sweep has."""
    return sweep_config(tiny_model_dir, glue_slice, out, "tickets.kinds=[winning]", "tickets.sparsities=[0.5]", *extra)


def test_a_sweep_without_confirm_seeds_finishes_and_says_so(tiny_model_dir, glue_slice, tmp_path):
    out = tmp_path / "sweep"
    result = cli("tickets", "find", "--task", "rte", "--model", tiny_model_dir, "--glue-dir", glue_slice, "--output-dir", out,
                 "--sparsities", "0.5", "--quiet", "--set", "tickets.kinds=[winning]", "--set", "tickets.confirm_seeds=[]",
                 "--set", "train.epochs=2", "--set", "train.batch_size=8", "--set", "data.max_seq_len=32",
                 "--set", f"data.cache_dir={tmp_path / 'cache'}")
    assert result.returncode == 0, result.stderr
    assert "Loading weights" not in result.stderr  # --quiet reaches the runs' own processes
    assert "no seed confirmation (tickets.confirm_seeds is empty)" in result.stdout and "±" not in result.stdout
    info = TicketSet.load(out / "tickets.json").tickets["rte"].info
    assert info["confirm"] == {} and sorted(p.name for p in (out / "rte").glob("*-s*")) == ["full-s1", "winning-0.5-s1"]


def unconfirmed_info() -> dict:
    """A super ticket's info as a sweep with `tickets.confirm_seeds: []` writes it: a curve, no reruns."""
    full = {"kind": "full", "sparsity": 0.0, "seed": 1, "kept": 1.0, "dev_best": 60.0, "dev_last": 55.0,
            "heldout_best": None, "dev_at_heldout_best": None}
    winning = {**full, "kind": "winning", "sparsity": 0.5, "kept": 0.5, "dev_best": 58.0}
    return {"kind": "full", "sparsity": 0.0, "selected_on": "dev", "metric": "accuracy", "seed": 1,
            "curve": [full, winning], "confirm": {}}


def test_a_super_ticket_without_seed_reruns_is_summarised_and_drawn(tmp_path):
    info = unconfirmed_info()
    assert confirm_summary(info) == "no seed confirmation (tickets.confirm_seeds is empty)"
    assert curve_rows(info)[1] == []
    write_curve(tmp_path, "rte", info)
    assert (tmp_path / "rte_curve.png").is_file() and len((tmp_path / "rte_curve.csv").read_text().splitlines()) == 3


@pytest.mark.slow  # a subprocess that imports torch
def test_the_phase_transition_summary_of_a_sweep_without_seed_reruns_says_so(tmp_path):
    """benchmarks/phase_transition.py --summary-only, run as a script from a copy beside results of its own."""
    bench = tmp_path / "benchmarks"
    (bench / "results" / "phase_transition" / "rte").mkdir(parents=True)
    for name in ("phase_transition.py", "common.py"):
        shutil.copy(REPO / "benchmarks" / name, bench / name)
    full = Ticket.full(SHAPE)
    TicketSet("tiny", SHAPE, {"rte": Ticket(full.attn_heads, full.ffn, unconfirmed_info())}).save(
        bench / "results" / "phase_transition" / "rte" / "tickets.json")
    done = run_python("", str(bench / "phase_transition.py"), "--summary-only")
    assert done.returncode == 0, done.stderr[-2000:]
    summary = (bench / "results" / "phase_transition.md").read_text()
    assert "Super ticket: **full at sparsity 0**. No seed confirmation (tickets.confirm_seeds is empty)." in summary
    assert "No winning ticket was rerun." in summary and (bench / "results" / "phase_transition" / "rte" / "rte_curve.png").is_file()


def test_changing_which_cells_run_reuses_the_finished_ones(tiny_model_dir, glue_slice, tmp_path):
    out = tmp_path / "sweep"
    find_super_tickets(lean_sweep(tiny_model_dir, glue_slice, out, "tickets.confirm_seeds=[]"), progress=False)
    finished = {p: p.read_bytes() for p in (out / "rte").glob("*/results.json")}
    more = lean_sweep(tiny_model_dir, glue_slice, out, "tickets.confirm_seeds=[2]", "tickets.sparsities=[0.25, 0.5]",
                      "tickets.kinds=[winning, random]", "tickets.control_sparsities=[0.5]")
    confirm = find_super_tickets(more, progress=False).tickets["rte"].info["confirm"]
    assert {p: p.read_bytes() for p in finished} == finished  # reused, not retrained
    assert confirm["full"]["seeds"] == [2] and len(confirm["full"]["scores"]) == 1
    assert {"winning-0.25-s1", "random-0.5-s1", "full-s2"} <= {p.name for p in (out / "rte").iterdir()}
    with pytest.raises(ConfigError, match=r"another config \(tickets.min_heads_per_layer: 1 -> 2\)"):
        find_super_tickets(lean_sweep(tiny_model_dir, glue_slice, out, "tickets.min_heads_per_layer=2"), progress=False)


def test_only_the_scored_full_model_keeps_weights(tiny_model_dir, glue_slice, tmp_path):
    out = tmp_path / "sweep"
    find_super_tickets(lean_sweep(tiny_model_dir, glue_slice, out, "tickets.confirm_seeds=[2]"), progress=False)
    cells = sorted(p for p in (out / "rte").glob("*-s*"))
    assert [p.name for p in cells] == ["full-s1", "full-s2", "winning-0.5-s1", "winning-0.5-s2"]
    assert [p.name for p in cells if (p / "best" / "model.safetensors").is_file()] == ["full-s1"]
    assert not any((p / "checkpoints").exists() for p in cells)
    with pytest.raises(ConfigError, match="train.save_best off"):
        load_run(out / "rte" / "winning-0.5-s1")


CONFIRMED = {("full", 2): 50.0, ("full", 3): 52.0, ("full", 4): 51.0, ("winning", 2): 51.5, ("winning", 3): 52.5, ("winning", 4): 53.0}


def test_confirmation_pairs_the_winning_ticket_with_the_full_model_in_the_ticket_file(monkeypatch, tmp_path):
    """The seed reruns (stood in for by their scores) give the winning entry its paired difference; the
    ticket file keeps it through its schema, and the printed line shows it with its interval."""
    def rerun(cfg, task, kind, sparsity, ticket, shape, task_root, seed, progress):
        return Cell(kind, sparsity, seed, 1.0, CONFIRMED[(kind, seed)], 0.0, None, None)

    monkeypatch.setattr(tickets, "run_cell", rerun)
    cfg = load_config(None, ["tickets.confirm_seeds=[2, 3, 4]"])
    best = Cell("winning", 0.3, 1, 0.7, 55.0, 54.0, None, None)
    confirm = confirm_with_seeds(cfg, "rte", best, {("full", 0.0): None, ("winning", 0.3): None}, None, tmp_path, False)
    expected = PairedDifference.of([51.5, 52.5, 53.0], [50.0, 52.0, 51.0])
    assert confirm["winning"]["vs_full"] == asdict(expected) and "vs_full" not in confirm["full"]
    ticket = Ticket(np.ones((2, 4), bool), np.ones((2, 5), bool), {"kind": "winning", "sparsity": 0.3, "seed": 1, "confirm": confirm})
    TicketSet("tiny", EncoderShape(2, 4, 5, 8), {"rte": ticket}).save(tmp_path / "tickets.json")
    assert TicketSet.load(tmp_path / "tickets.json").tickets["rte"].info["confirm"] == confirm
    line = confirm_summary(ticket.info)
    assert line.endswith(f"(seeds [2, 3, 4]) | winning 0.3 - full model: {expected}") and "95 % CI [" in line


def test_ticket_files_written_before_the_paired_difference_still_read_and_show_it():
    """A committed mini-GLUE v1 sweep (no `vs_full`; confirmed on seeds 1-3, as v1 did)."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "phase_transition" / "rte" / "tickets.json"
    info = TicketSet.load(path).tickets["rte"].info
    assert "vs_full" not in info["confirm"]["winning"]
    difference = PairedDifference.of(info["confirm"]["winning"]["scores"], info["confirm"]["full"]["scores"])
    assert confirm_summary(info).endswith(f"(seeds [1, 2, 3]) | winning 0.1 - full model: {difference}")
