"""`mtl-tickets compare` end to end on a tiny encoder: every contender, two seeds, one table, reuse."""

import csv
import math

import pytest
from scipy import stats

from mtl_tickets.compare import Row, paired_table

from .test_cli import cli
from .test_multitask import ticket_file


@pytest.mark.slow
def test_compare_trains_every_contender_and_reuses_finished_runs(tiny_model_dir, glue_slice, tmp_path):
    tickets = ticket_file(tmp_path / "t.json")
    out = tmp_path / "cmp"
    args = ["compare", "--task", "rte,stsb", "--model", tiny_model_dir, "--glue-dir", glue_slice, "--epochs", "1",
            "--batch-size", "8", "--max-seq-len", "24", "--output-dir", out, "--tickets", tickets, "--seeds", "1,2",
            "--quiet", "--set", f"data.cache_dir={tmp_path / 'cache'}"]
    result = cli(*args)
    assert result.returncode == 0, result.stderr[-2000:]
    for contender in ("single_full", "single_tickets", "joint_full", "joint_tickets", "joint_adaptive"):
        assert f"| {contender} |" in result.stdout
    assert result.stdout.count("Against single_full, seed by seed") == 2  # one per selection rule
    table = list(csv.DictReader((out / "comparison.csv").open()))
    rows, checkpoint = ([r for r in table if r["selection"] == sel] for sel in ("per_task", "checkpoint"))
    assert len(rows) == len(checkpoint) == 10 and {r["seed"] for r in rows} == {"1", "2"}
    for per_task, one_model in zip(rows, checkpoint, strict=True):  # a task's best epoch is at least the chosen one
        same = per_task["contender"].startswith("single")
        for task in ("rte", "stsb"):
            assert float(per_task[task]) == float(one_model[task]) if same else float(per_task[task]) >= float(one_model[task])
    by = {r["contender"]: r for r in rows}
    assert float(by["single_full"]["params_total"]) == 2.0  # two full encoders
    assert float(by["joint_full"]["params_total"]) == 1.0
    assert float(by["joint_tickets"]["params_per_task"]) < 1.0
    runs = sorted(p.name for p in (out / "joint_full").iterdir())
    again = cli(*args)
    assert again.returncode == 0 and again.stdout == result.stdout
    assert sorted(p.name for p in (out / "joint_full").iterdir()) == runs


@pytest.mark.slow
def test_full_contenders_need_no_tickets_and_a_missing_ticket_is_named(tiny_model_dir, glue_slice, tmp_path):
    common = ["--model", tiny_model_dir, "--glue-dir", glue_slice, "--epochs", "1", "--batch-size", "8",
              "--max-seq-len", "24", "--seeds", "1", "--quiet", "--set", f"data.cache_dir={tmp_path / 'cache'}"]
    full = cli("compare", "--task", "rte", "--output-dir", tmp_path / "full", *common,
               "--set", "compare.contenders=[single_full, joint_full]")
    assert full.returncode == 0, full.stderr[-2000:]
    assert "| joint_full |" in full.stdout
    tickets = ticket_file(tmp_path / "t.json", tasks=("rte",))
    missing = cli("compare", "--task", "rte,stsb", "--output-dir", tmp_path / "t", "--tickets", tickets, *common)
    assert missing.returncode == 2 and "has no ticket for stsb (it has rte)" in missing.stderr, missing.stderr


def test_paired_differences_match_a_hand_computation():
    base = Row("single_full", [1, 2, 3], {"rte": [50.0, 52.0, 54.0]}, [50.0, 52.0, 54.0], 1.0, 1.0)
    joint = Row("joint_full", [1, 2, 3], {"rte": [51.0, 52.5, 53.0]}, [51.0, 52.5, 53.0], 1.0, 0.2)
    gains = [1.0, 0.5, -1.0]
    mean = sum(gains) / 3
    sd = math.sqrt(sum((g - mean) ** 2 for g in gains) / 2)
    p = 2 * stats.t.sf(abs(mean / (sd / math.sqrt(3))), df=2)
    row = paired_table([base, joint], ["rte"])[-1]
    assert row == f"| joint_full | +0.17 (2/3, p {p:.2f}) | +0.17 (2/3, p {p:.2f}) |"
