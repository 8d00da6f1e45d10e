"""`mtl-tickets compare` end to end on a tiny encoder: every contender, two seeds, one table, reuse."""

import csv


from .test_cli import cli
from .test_multitask import ticket_file


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
    rows = list(csv.DictReader((out / "comparison.csv").open()))
    assert len(rows) == 10
    by = {r["contender"]: r for r in rows}
    assert float(by["single_full"]["params_total"]) == 2.0  # two full encoders
    assert float(by["joint_full"]["params_total"]) == 1.0
    assert float(by["joint_tickets"]["params_per_task"]) < 1.0
    runs = sorted(p.name for p in (out / "joint_full").iterdir())
    again = cli(*args)
    assert again.returncode == 0 and again.stdout == result.stdout
    assert sorted(p.name for p in (out / "joint_full").iterdir()) == runs


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
