"""`mtl-tickets compare` end to end on a tiny encoder: every contender, two seeds, one table, reuse."""

import csv
import math
from pathlib import Path

import pytest
from scipy import stats

import numpy as np

from mtl_tickets import registry, train as train_module
from mtl_tickets.compare import Row, compare, paired_table, write_table
from mtl_tickets.config import load_config
from mtl_tickets.masks import Ticket, TicketSet
from mtl_tickets.registry import TaskSpec, TsvSource
from mtl_tickets.schema import ConfigError
from mtl_tickets.stats import PairedDifference
from mtl_tickets.train import start_session

from .test_cli import cli
from .test_multitask import SHAPE, ticket_file


@pytest.mark.slow
def test_compare_trains_every_contender_and_reuses_finished_runs(tiny_model_dir, glue_slice, tmp_path):
    tickets = ticket_file(tmp_path / "t.json")
    out = tmp_path / "cmp"
    args = ["compare", "--task", "rte,stsb", "--model", tiny_model_dir, "--glue-dir", glue_slice, "--epochs", "1",
            "--batch-size", "8", "--max-seq-len", "24", "--output-dir", out, "--tickets", tickets, "--seeds", "1,2",
            "--quiet", "--set", f"data.cache_dir={tmp_path / 'cache'}", "--set", "train.process_per_run=false"]
    result = cli(*args)
    assert result.returncode == 0, result.stderr[-2000:]
    for contender in ("single_full", "single_tickets", "joint_full", "joint_tickets", "joint_adaptive"):
        assert f"| {contender} |" in result.stdout
    assert "| GLUE avg |" in result.stdout and "reuses the runs" not in result.stdout  # GLUE tasks, sparse tickets
    assert result.stdout.count("Against single_full, paired by seed (2 seeds)") == 2  # one per selection rule
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
              "--max-seq-len", "24", "--seeds", "1", "--quiet", "--set", f"data.cache_dir={tmp_path / 'cache'}",
              "--set", "train.process_per_run=false"]
    full = cli("compare", "--task", "rte", "--output-dir", tmp_path / "full", *common,
               "--set", "compare.contenders=[single_full, joint_full]")
    assert full.returncode == 0, full.stderr[-2000:]
    assert "| joint_full |" in full.stdout
    tickets = ticket_file(tmp_path / "t.json", tasks=("rte",))
    missing = cli("compare", "--task", "rte,stsb", "--output-dir", tmp_path / "t", "--tickets", tickets, *common)
    assert missing.returncode == 2 and "has no ticket for stsb (it has rte)" in missing.stderr, missing.stderr


def test_a_task_outside_glue_gets_a_plain_average_and_full_tickets_reuse_the_full_run(
        tiny_model_dir, glue_slice, tmp_path, monkeypatch):
    monkeypatch.setattr(registry, "_extra", {})  # a held-out three-way entailment task, registered only here
    registry.register_task(TaskSpec(name="nli3", labels=["entailment", "neutral", "contradiction"],
                                    tsv=TsvSource(dir="MNLI", text=["sentence1", "sentence2"], label="gold_label",
                                                  dev=["dev_matched"])))
    full = {t: Ticket(np.ones((2, 4), bool), np.ones((2, 37), bool)) for t in ("rte", "nli3")}
    TicketSet("tiny", SHAPE, full).save(tmp_path / "t.json")
    trained = []

    def counting_start(cfg, *args):
        trained.append(Path(cfg.output_dir).parent.name)
        return start_session(cfg, *args)

    monkeypatch.setattr(train_module, "start_session", counting_start)
    cfg = load_config(None, ["tasks=[rte, nli3]", f"model.name={tiny_model_dir}", f"data.glue_dir={glue_slice}",
                             "train.epochs=1", "train.batch_size=8", "data.max_seq_len=24", f"output_dir={tmp_path / 'cmp'}",
                             f"tickets_file={tmp_path / 't.json'}", "compare.seeds=[1]",
                             "compare.contenders=[joint_full, joint_tickets]", f"data.cache_dir={tmp_path / 'cache'}",
                             "train.process_per_run=false"])
    full_row, tickets_row = compare(cfg, progress=False)["per_task"]
    assert trained == ["joint_full"]  # joint_tickets was not trained a second time
    assert tickets_row.runs_of == "joint_full" and full_row.runs_of is None
    assert tickets_row.scores == full_row.scores and not (tmp_path / "cmp" / "joint_tickets").exists()
    table = (tmp_path / "cmp" / "comparison.md").read_text()
    assert "| average |" in table and "GLUE avg" not in table
    assert "joint_tickets reuses the runs of joint_full: every super ticket keeps every unit." in table
    rows = list(csv.DictReader((tmp_path / "cmp" / "comparison.csv").open()))
    assert [r["runs_of"] for r in rows] == ["", "joint_full"] * 2 and "average" in rows[0]
    assert "| joint_tickets | average | +0.00 | no detectable difference (no 95 % CI: one seed) |" in table


def test_paired_differences_match_a_hand_computation():
    base = Row("single_full", [1, 2, 3], {"rte": [50.0, 52.0, 54.0]}, [50.0, 52.0, 54.0], 1.0, 1.0)
    joint = Row("joint_full", [1, 2, 3], {"rte": [51.0, 52.5, 53.0]}, [51.0, 52.5, 53.0], 1.0, 0.2)
    gains = [1.0, 0.5, -1.0]
    mean = sum(gains) / 3
    sd = math.sqrt(sum((g - mean) ** 2 for g in gains) / 2)
    se = sd / math.sqrt(3)
    p = 2 * stats.t.sf(abs(mean / se), df=2)
    low, high = mean - stats.t.ppf(0.975, df=2) * se, mean + stats.t.ppf(0.975, df=2) * se
    table = paired_table([base, joint], ["rte"])
    assert table[0].startswith("Against single_full, paired by seed (3 seeds)")
    assert table[2] == "| contender | task | difference | reading | p (t) | p (sign flips) | seeds ahead | detectable at 80 % power |"
    cells = f" | +0.17 | no detectable difference (95 % CI [{low:+.2f}, {high:+.2f}]) | {p:.2g} | 1 | 2/3 |"
    assert table[-2].startswith(f"| joint_full | rte{cells}") and table[-1].startswith(f"| joint_full | GLUE avg{cells}")


def test_the_tables_give_every_contender_its_paired_difference_to_the_first(tmp_path):
    """comparison.csv keeps its columns; comparison_paired.csv and the markdown add the paired numbers."""
    seeds = [2, 3, 4, 5, 6]
    full = Row("single_full", seeds, {"rte": [50.0, 51.0, 52.0, 53.0, 54.0]}, [50.0, 51.0, 52.0, 53.0, 54.0], 1.0, 1.0)
    better = Row("joint_tickets", seeds, {"rte": [51.0, 53.0, 55.0, 57.0, 59.0]}, [51.0, 53.0, 55.0, 57.0, 59.0], 0.7, 0.8)
    write_table(tmp_path, {"per_task": [full, better]}, ["rte"])
    with (tmp_path / "comparison.csv").open() as f:
        assert next(csv.reader(f)) == ["selection", "contender", "seed", "rte", "glue_average", "params_per_task",
                                       "params_total", "runs_of"]
    paired = list(csv.DictReader((tmp_path / "comparison_paired.csv").open()))
    assert [(r["contender"], r["baseline"], r["task"]) for r in paired] == [("joint_tickets", "single_full", "rte"),
                                                                           ("joint_tickets", "single_full", "glue_average")]
    expected = PairedDifference.of(better.scores["rte"], full.scores["rte"])  # differences 1, 2, 3, 4, 5
    assert float(paired[0]["ci_low"]) == pytest.approx(expected.ci_low, abs=1e-6) and paired[0]["p_permutation"] == "0.0625"
    assert (paired[0]["n"], paired[0]["ahead"]) == ("5", "5") and float(paired[0]["mde"]) == pytest.approx(expected.mde, abs=1e-6)
    markdown = (tmp_path / "comparison.md").read_text()
    assert "| joint_tickets | rte | +3.00 | a difference (95 % CI [+1.04, +4.96]) | 0.013 | 0.062 | 5/5 | 2.66 |" in markdown


def test_compare_table_names_the_tables_so_comparisons_can_share_a_run_directory(tmp_path):
    row = Row("joint_tickets", [2, 3], {"rte": [51.23456, 52.0]}, [51.23456, 52.0], 0.7, 0.8)
    write_table(tmp_path, {"per_task": [row]}, ["rte"], name="main_comparison")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["main_comparison.csv", "main_comparison.md",
                                                          "main_comparison_paired.csv"]
    assert next(csv.DictReader((tmp_path / "main_comparison.csv").open()))["rte"] == "51.2346"  # not rounded to 0.01
    with pytest.raises(ConfigError, match=r"table '../x' is not a plain file name"):
        load_config(None, ["compare.table=../x"])


@pytest.mark.slow
def test_adaptive_controls_read_the_learned_run_of_the_same_seed(tiny_model_dir, glue_slice, tmp_path):
    """Learn-then-fix trains through exactly the learned tickets; random swaps flip as many units per
    task and unit type, at random; borrowing off is the adaptive run with adaptive.borrow false."""
    from mtl_tickets.config import load_config

    tickets = ticket_file(tmp_path / "t.json")
    out = tmp_path / "cmp"
    cfg = load_config(None, [f"model.name={tiny_model_dir}", f"data.glue_dir={glue_slice}", f"output_dir={out}",
                             f"data.cache_dir={tmp_path / 'cache'}", "tasks=[rte, stsb]", "train.epochs=2", "train.batch_size=4",
                             "data.max_seq_len=24", f"tickets_file={tickets}", "compare.seeds=[2]", "adaptive.lr=0.1",
                             "adaptive.margin=0.1", "adaptive.warmup=0", "adaptive.cooldown=0",
                             "compare.contenders=[joint_tickets, joint_learned_fixed, joint_random_swaps, joint_adaptive_no_borrow]",
                             "train.process_per_run=false"])
    rows = {r.contender: r for r in compare(cfg, progress=False)["per_task"]}
    assert set(rows) == {"joint_tickets", "joint_learned_fixed", "joint_random_swaps", "joint_adaptive_no_borrow"}
    start = TicketSet.load(tickets).tickets
    learned = TicketSet.load(out / "joint_adaptive" / "joint-s2" / "learned_tickets.json").tickets
    fixed = TicketSet.load(out / "joint_learned_fixed" / "joint-s2" / "tickets.json").tickets
    swapped = TicketSet.load(out / "joint_random_swaps" / "joint-s2" / "tickets.json").tickets
    assert fixed == learned and any(learned[t] != start[t] for t in learned)
    for t in start:
        for part in ("attn_heads", "ffn"):
            was, now, rand = (getattr(x[t], part) for x in (start, learned, swapped))
            assert (rand & ~was).sum() == (now & ~was).sum() == (was & ~rand).sum()
    assert not load_config(out / "joint_adaptive_no_borrow" / "joint-s2" / "config.yaml").adaptive.borrow
    assert rows["joint_learned_fixed"].params_per_task == rows["joint_tickets"].params_per_task  # equal budgets
