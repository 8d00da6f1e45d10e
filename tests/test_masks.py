"""Ticket files, shape checks, reference import, overlap against a hand computation."""

import json

import numpy as np
import pytest

from mtl_tickets.gates import EncoderShape
from mtl_tickets.masks import Ticket, TicketSet, import_reference, jaccard, merge, overlap
from mtl_tickets.schema import ConfigError

SHAPE = EncoderShape(layers=2, heads=4, ffn=5, hidden=8)


def ticket(heads, ffn):
    return Ticket(np.array(heads, bool), np.array(ffn, bool), {"sparsity": 0.2, "kind": "winning"})


A = ticket([[1, 1, 0, 0], [1, 0, 1, 1]], [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
B = ticket([[1, 0, 0, 1], [1, 1, 1, 1]], [[0, 1, 1, 1, 0], [1, 1, 1, 1, 0]])


def test_round_trip_keeps_units_and_provenance(tmp_path):
    TicketSet("tiny", SHAPE, {"rte": A, "mrpc": B}).save(tmp_path / "t.json")
    loaded = TicketSet.load(tmp_path / "t.json", expect=SHAPE)
    assert loaded.tickets["rte"] == A and loaded.tickets["mrpc"] == B
    assert loaded.tickets["rte"].info == {"sparsity": 0.2, "kind": "winning"}
    data = json.loads((tmp_path / "t.json").read_text())
    assert data["tickets"]["rte"]["attn_heads"] == {"0": [0, 1], "1": [0, 2, 3]}
    assert data["tickets"]["rte"]["params_kept"] < data["tickets"]["rte"]["params_total"]


def test_sweep_dir_follows_the_ticket_file_when_moved_and_survives_a_merge(tmp_path):
    sweep = tmp_path / "sweeps" / "rte"
    found = Ticket(A.attn_heads, A.ffn, {"sweep_dir": str(sweep / "rte")})
    TicketSet("tiny", SHAPE, {"rte": found}).save(sweep / "tickets.json")
    assert json.loads((sweep / "tickets.json").read_text())["tickets"]["rte"]["sweep_dir"] == "rte"
    merged = merge([(sweep / "tickets.json", TicketSet.load(sweep / "tickets.json"))])
    merged.save(tmp_path / "elsewhere" / "super.json")
    assert TicketSet.load(tmp_path / "elsewhere" / "super.json").tickets["rte"].info["sweep_dir"] == str(sweep / "rte")
    (tmp_path / "sweeps").rename(tmp_path / "moved")
    moved = TicketSet.load(tmp_path / "moved" / "rte" / "tickets.json").tickets["rte"]
    assert moved.info["sweep_dir"] == str(tmp_path / "moved" / "rte" / "rte")


def test_a_ticket_for_another_shape_is_refused(tmp_path):
    TicketSet("tiny", SHAPE, {"rte": A}).save(tmp_path / "t.json")
    with pytest.raises(ConfigError, match="made for an encoder of 2 layers x 4 heads.*this encoder has 6 layers x 12 heads"):
        TicketSet.load(tmp_path / "t.json", expect=EncoderShape(6, 12, 1536, 384))


def test_truncated_and_out_of_range_files_are_refused(tmp_path):
    path = tmp_path / "t.json"
    TicketSet("tiny", SHAPE, {"rte": A}).save(path)
    text = path.read_text()
    path.write_text(text[: len(text) // 2])
    with pytest.raises(ConfigError, match="was it truncated"):
        TicketSet.load(path)
    data = json.loads(text)
    data["tickets"]["rte"]["attn_heads"]["1"] = [0, 7]
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match=r"rte.attn_heads\[1\]: index 7 is out of range \[0, 4\)"):
        TicketSet.load(path)


def test_overlap_matches_a_hand_computation():
    result = overlap({"rte": A, "mrpc": B})
    # heads: A keeps 5, B keeps 6, both keep (0,0), (1,0), (1,2), (1,3) = 4; union 7
    assert result["attn_heads"]["shared"] == [[5, 4], [4, 6]]
    assert result["attn_heads"]["jaccard"][0][1] == pytest.approx(4 / 7)
    # ffn: A keeps 8, B keeps 7, both keep 6 (layer 0: 1, 2; layer 1: 0-3); union 9
    assert result["ffn"]["shared"][0][1] == 6 and result["ffn"]["jaccard"][1][0] == pytest.approx(6 / 9)
    assert result["attn_heads"]["tasks_keeping"] == [[2, 1, 0, 1], [2, 1, 2, 2]]
    assert jaccard(np.zeros(3, bool), np.zeros(3, bool)) == 1.0


def test_import_of_the_reference_mask_files(tmp_path):
    (tmp_path / "heads_to_mask.json").write_text(json.dumps({"0": {"1": [3, 0]}, "1": {"0": [2]}}))
    (tmp_path / "ffn_to_mask.json").write_text(json.dumps({"0": [1], "1": []}))
    shape = EncoderShape(2, 4, 5, 8)
    ts = import_reference(tmp_path / "heads_to_mask.json", tmp_path / "ffn_to_mask.json", ["rte", "mrpc"], "tiny", shape)
    assert ts.tickets["rte"].attn_heads.tolist() == [[1, 1, 1, 1], [0, 1, 1, 0]]
    assert ts.tickets["rte"].ffn.tolist() == [True, False] and ts.granularity == "layer"
    assert ts.tickets["mrpc"].attn_heads[0].tolist() == [1, 1, 0, 1]


@pytest.mark.slow
def test_overlap_cli_prints_tables_and_writes_tensorboard(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from .test_cli import cli

    TicketSet("tiny", SHAPE, {"rte": A, "mrpc": B}).save(tmp_path / "t.json")
    result = cli("overlap", tmp_path / "t.json", "--logdir", tmp_path / "tb")
    assert result.returncode == 0, result.stderr
    assert "0.57 (   4)" in result.stdout  # heads Jaccard 4/7 with 4 shared
    assert "layer  1  2 1 2 2" in result.stdout
    events = EventAccumulator(str(tmp_path / "tb"), size_guidance={"images": 0}).Reload()
    assert {"overlap/heads_jaccard", "overlap/FFN_jaccard", "tickets/rte"} <= set(events.Tags()["images"])
    assert events.Scalars("overlap/heads_jaccard/rte-mrpc")[0].value == pytest.approx(4 / 7)


def test_merge_joins_tasks_and_refuses_clashes(tmp_path):
    first = (tmp_path / "a.json", TicketSet("tiny", SHAPE, {"rte": A}))
    assert merge([first, (tmp_path / "b.json", TicketSet("tiny", SHAPE, {"mrpc": B}))]).tickets == {"rte": A, "mrpc": B}
    with pytest.raises(ConfigError, match="b.json: task 'rte' already has a ticket"):
        merge([first, (tmp_path / "b.json", TicketSet("tiny", SHAPE, {"rte": B}))])
    wider = EncoderShape(layers=2, heads=4, ffn=6, hidden=8)
    with pytest.raises(ConfigError, match="c.json: tickets for 2 layers x 4 heads, FFN 6"):
        merge([first, (tmp_path / "c.json", TicketSet("tiny", wider, {"mrpc": Ticket(A.attn_heads, np.ones((2, 6), bool))}))])
