"""The training recipe on a tiny random encoder and real GLUE slices."""

import json
import os
import signal

import pytest
import torch
import yaml
from safetensors.torch import load_file

from mtl_tickets import checkpoint, registry
from mtl_tickets.config import TrainConfig, load_config
from mtl_tickets.registry import TaskSpec, TsvSource
from mtl_tickets.schema import ConfigError
from mtl_tickets.train import Plan, TrainingInterrupted, bf16_autocast, format_results, save_checkpoint, train


def tiny_config(tiny_model_dir, glue_slice, out, *extra):
    return load_config(None, [
        f"model.name={tiny_model_dir}", f"data.glue_dir={glue_slice}", f"output_dir={out}",
        f"data.cache_dir={out.parent / 'cache'}", "data.max_seq_len=32", "train.batch_size=4",
        "train.eval_batch_size=8", "train.epochs=1", "train.checkpoint_every=2", "train.log_every=1", *extra,
    ])


def test_two_task_run_writes_a_complete_run_directory(tiny_model_dir, glue_slice, tmp_path):
    cfg = tiny_config(tiny_model_dir, glue_slice, tmp_path / "run", "tasks=[rte, stsb]")
    result = train(cfg, progress=False)
    out = result.output_dir
    assert (out / "config.yaml").is_file() and (out / "best" / "model.safetensors").is_file()
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    results = json.loads((out / "results.json").read_text())
    assert set(results["best"]["tasks"]) == {"rte", "stsb"}
    assert set(results["best"]["tasks"]["stsb"]["dev"]) == {"pearson", "spearman"}
    assert results["steps"] == results["steps_per_epoch"] == 8  # 16 rows / batch 4, two tasks
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert {k for line in lines for k in line} >= {"train/rte/loss", "train/stsb/loss", "train/lr", "eval/glue_average"}


def test_loss_falls_on_a_tiny_overfit_set(tiny_model_dir, glue_slice, tmp_path):
    cfg = tiny_config(tiny_model_dir, glue_slice, tmp_path / "run", "tasks=[sst2]", "train.epochs=40",
                      "train.lr=1e-3", "data.max_train_examples=8", "train.warmup=0")
    out = train(cfg, progress=False).output_dir
    losses = [json.loads(x)["train/sst2/loss"] for x in (out / "metrics.jsonl").read_text().splitlines() if "train/sst2/loss" in x]
    assert sum(losses[-3:]) / 3 < 0.5 * sum(losses[:3]) / 3


def test_resumed_run_ends_with_the_same_weights(tiny_model_dir, glue_slice, tmp_path):
    keep = "train.keep_checkpoints=true"  # the last weights, to compare
    straight = train(tiny_config(tiny_model_dir, glue_slice, tmp_path / "a", "tasks=[rte, mrpc]", keep), progress=False)
    train(tiny_config(tiny_model_dir, glue_slice, tmp_path / "b", "tasks=[rte, mrpc]", "train.max_steps=3"), progress=False)
    resumed = train(tiny_config(tiny_model_dir, glue_slice, tmp_path / "b", "tasks=[rte, mrpc]", keep), progress=False)
    a = load_file(str(checkpoint.latest(straight.output_dir / "checkpoints") / "model.safetensors"))
    b = load_file(str(checkpoint.latest(resumed.output_dir / "checkpoints") / "model.safetensors"))
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
    assert straight.results["last"]["tasks"] == resumed.results["last"]["tasks"]


def test_a_different_config_in_the_same_output_dir_is_refused(tiny_model_dir, glue_slice, tmp_path):
    train(tiny_config(tiny_model_dir, glue_slice, tmp_path / "run", "tasks=[wnli]", "train.max_steps=1"), progress=False)
    with pytest.raises(ConfigError, match=r"another config \(train.lr: 0.0001 -> 0.0002"):
        train(tiny_config(tiny_model_dir, glue_slice, tmp_path / "run", "tasks=[wnli]", "train.lr=2e-4"), progress=False)


def test_a_run_resumes_under_a_compare_with_more_seeds(tiny_model_dir, glue_slice, tmp_path):
    train(tiny_config(tiny_model_dir, glue_slice, tmp_path / "run", "tasks=[wnli]", "compare.seeds=[1]"), progress=False)
    again = tiny_config(tiny_model_dir, glue_slice, tmp_path / "run", "tasks=[wnli]", "compare.seeds=[1, 2, 3]")
    assert train(again, progress=False).results["complete"]


def test_a_run_saved_before_a_setting_existed_still_resumes(tiny_model_dir, glue_slice, tmp_path):
    cfg = tiny_config(tiny_model_dir, glue_slice, tmp_path / "run", "tasks=[wnli]", "train.max_steps=1")
    train(cfg, progress=False)
    saved = tmp_path / "run" / "config.yaml"
    old = yaml.safe_load(saved.read_text())
    del old["data"]["max_train_examples_per_task"]  # as written by a version without that setting
    saved.write_text(yaml.safe_dump(old))
    assert train(tiny_config(tiny_model_dir, glue_slice, tmp_path / "run", "tasks=[wnli]"), progress=False).results["complete"]


def test_a_per_task_cap_for_an_unknown_task_is_refused(tiny_model_dir, glue_slice, tmp_path):
    cfg = tiny_config(tiny_model_dir, glue_slice, tmp_path / "run", "tasks=[wnli]", "data.max_train_examples_per_task.cloa=5")
    with pytest.raises(ConfigError, match=r"unknown task 'cloa' \(did you mean 'cola'\?\)"):
        train(cfg, progress=False)


def test_plan_evaluates_every_epoch_and_at_the_end():
    cfg = load_config(None, ["train.epochs=2.5"])
    plan = Plan.of({"a": 6, "b": 4}, cfg)
    assert (plan.steps_per_epoch, plan.total_steps) == (10, 25)
    assert plan.eval_steps == {10, 20, 25}


def train_losses(cfg) -> list[float]:
    out = train(cfg, progress=False).output_dir
    return [v for x in (out / "metrics.jsonl").read_text().splitlines() for k, v in json.loads(x).items() if k.endswith("/loss")]


@pytest.mark.parametrize("switch", ["cpu_bf16", "fused_optimizer", pytest.param("compile", marks=pytest.mark.slow)])
def test_each_speed_switch_trains_to_the_losses_of_the_plain_step(tiny_model_dir, glue_slice, tmp_path, monkeypatch, switch):
    """bf16 autocast, the fused optimizer and compilation change rounding, not training: the same
    losses, step by step (compiling takes minutes on a CPU, hence slow). Compiled dropout draws its
    masks from another generator, so that comparison runs without dropout."""
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)  # emulated where the CPU lacks it
    plain = ["train.cpu_bf16=false", "train.fused_optimizer=false", "train.compile=false"]
    fast = [f"train.{switch}=true" if switch in x else x for x in plain]
    no_dropout = ("model.dropout=0", "model.head_dropout=0") if switch == "compile" else ()
    args = ("tasks=[rte, mrpc]", "train.epochs=2", "train.lr=1e-3", *no_dropout)
    a = train_losses(tiny_config(tiny_model_dir, glue_slice, tmp_path / "plain", *args, *plain))
    b = train_losses(tiny_config(tiny_model_dir, glue_slice, tmp_path / "fast", *args, *fast))
    assert len(a) == len(b) == 16 and a != b  # the switch really changed the step
    assert b == pytest.approx(a, abs=5e-3)
    precision = {run: json.loads((tmp_path / run / "results.json").read_text())["precision"] for run in ("plain", "fast")}
    assert precision == {"plain": "fp32", "fast": "bf16-autocast" if switch == "cpu_bf16" else "fp32"}


def test_cpu_bf16_only_where_the_cpu_has_native_bf16(monkeypatch):
    cpu = torch.device("cpu")
    for native in (True, False):
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda native=native: native)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
        assert bf16_autocast(TrainConfig(), cpu)._enabled is native
        assert bf16_autocast(TrainConfig(cpu_bf16=False), cpu)._enabled is False


def test_the_printed_average_is_called_the_glue_average_only_on_glue_tasks(monkeypatch):
    monkeypatch.setattr(registry, "_extra", {})
    registry.register_task(TaskSpec(name="nli3", labels=["entailment", "neutral", "contradiction"],
                                    tsv=TsvSource(dir="MNLI", text=["sentence1", "sentence2"], label="gold_label")))
    for tasks, label in ((["rte", "stsb"], "GLUE average"), (["rte", "nli3"], "average")):
        evaluation = {"epoch": 1.0, "glue_average": 60.0, "tasks": {t: {"dev": {"accuracy": 60.0}} for t in tasks}}
        table = format_results({"tasks": tasks, "best": evaluation, "last": evaluation})
        assert table.splitlines()[-1] == f"{label}: best 60.00 (epoch 1.0), last 60.00"


def test_a_stop_signal_during_the_last_step_keeps_the_finished_run_and_still_stops(tiny_model_dir, glue_slice, tmp_path,
                                                                                 monkeypatch):
    """SIGTERM arriving after the last step's stop check (here, while its checkpoint is saved) is not lost:
    the run is finished and kept, and the command stops instead of starting its next run."""

    def save_then_signal(s):
        save_checkpoint(s)
        if s.state.step == s.plan.last_step:
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr("mtl_tickets.train.save_checkpoint", save_then_signal)
    cfg = tiny_config(tiny_model_dir, glue_slice, tmp_path / "run", "tasks=[rte]", "train.max_steps=2")
    with pytest.raises(TrainingInterrupted, match="stopped after finishing the run"):
        train(cfg, progress=False)
    monkeypatch.undo()
    assert json.loads((tmp_path / "run" / "results.json").read_text())["steps"] == 2
    assert train(cfg, progress=False).results["steps"] == 2  # rerun: the finished run, as it is
