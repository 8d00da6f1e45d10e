"""The real `mtl-tickets` command in a subprocess: a run end to end, and bad input as one clear line."""

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow  # every test starts the command in a subprocess


def cli(*args, cwd=None):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "mtl_tickets.cli", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, env=env, timeout=300)


@pytest.fixture(scope="module")
def finished_run(tiny_model_dir, glue_slice, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    result = cli("train", "--task", "rte,mnli", "--model", tiny_model_dir, "--glue-dir", glue_slice, "--epochs", "1",
                 "--batch-size", "8", "--max-seq-len", "32", "--output-dir", out, "--quiet",
                 "--set", f"data.cache_dir={out.parent / 'cache'}")
    assert result.returncode == 0, result.stderr
    return out, result


def test_train_prints_the_table_and_writes_results(finished_run):
    out, result = finished_run
    assert "GLUE average: best" in result.stdout and "dev_mismatched" in result.stdout
    results = json.loads((out / "results.json").read_text())
    assert set(results["best"]["tasks"]) == {"rte", "mnli"}


def test_quiet_prints_only_the_final_table(finished_run):
    _, result = finished_run  # trained with --quiet
    assert result.stderr == ""  # no "Loading weights" bar, no training bar, no line per evaluation
    assert result.stdout.startswith("task ") and result.stdout.splitlines()[-2].startswith("GLUE average: best")


def test_evaluate_reproduces_the_best_metrics(finished_run):
    out, _ = finished_run
    result = cli("evaluate", out)
    assert result.returncode == 0, result.stderr
    best = json.loads((out / "results.json").read_text())["best"]["tasks"]["rte"]["dev"]["accuracy"]
    assert f"accuracy {best:.2f}" in result.stdout


def test_predict_writes_glue_submission_files_including_ax(finished_run, tmp_path):
    out, _ = finished_run
    result = cli("predict", out, "--out", tmp_path)
    assert result.returncode == 0, result.stderr
    # the local copy has no MNLI test files: skipped with a warning, the others written
    assert {p.name for p in tmp_path.iterdir()} == {"RTE.tsv", "AX.tsv"}
    assert "skipping mnli test split 'test_matched'" in result.stderr
    lines = (tmp_path / "RTE.tsv").read_text().splitlines()
    assert lines[0] == "index\tprediction" and len(lines) == 17
    assert lines[1].split("\t")[1] in {"entailment", "not_entailment"}


def test_tasks_lists_the_registry():
    result = cli("tasks")
    assert result.returncode == 0 and "mnli" in result.stdout and "via mnli" in result.stdout


def test_every_command_has_help_with_an_example():
    from mtl_tickets.cli import main

    commands = [[name] for name in main.commands if name != "tickets"] + [["tickets", c] for c in main.commands["tickets"].commands]
    assert len(commands) >= 10
    for command in commands:
        result = cli(*command, "--help")
        assert result.returncode == 0 and "Example" in result.stdout, command


def broken_glue(glue_slice, tmp_path):
    bad = tmp_path / "glue"
    (bad / "RTE").mkdir(parents=True)
    text = (glue_slice / "RTE" / "train.tsv").read_text().splitlines()
    text[3] = text[3].rsplit("\t", 1)[0]  # drop the label column of data row 3 (file line 4)
    (bad / "RTE" / "train.tsv").write_text("\n".join(text) + "\n")
    return bad


@pytest.mark.parametrize("case", ["unknown task", "missing data dir", "malformed row", "bad config key", "unknown model"])
def test_bad_input_is_one_clear_line_and_a_non_zero_exit(case, tiny_model_dir, glue_slice, tmp_path):
    args = {"--task": "rte", "--model": tiny_model_dir, "--glue-dir": glue_slice, "--output-dir": tmp_path / "run"}
    expected = {
        "unknown task": ("--task", "rtee", "unknown task 'rtee' (did you mean 'rte'?)"),
        "missing data dir": ("--glue-dir", tmp_path / "nowhere", "does not exist"),
        "malformed row": ("--glue-dir", broken_glue(glue_slice, tmp_path), "train.tsv:4: expected 4 tab-separated columns, got 3"),
        "bad config key": ("--set", "train.learning_rate=1", "unknown key 'learning_rate'"),
        "unknown model": ("--model", tmp_path / "no-such-model", "cannot load model"),
    }[case]
    args[expected[0]] = expected[1]
    result = cli("train", *[x for kv in args.items() for x in kv], "--set", f"data.cache_dir={tmp_path / 'cache'}")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and expected[2] in errors[0], result.stderr
