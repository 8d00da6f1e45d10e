"""The run directory: a finished run keeps no resumable checkpoint, and only one process trains in it at
a time (a live one is refused by PID; a killed one's lock never blocks the resume)."""

import copy
import importlib.util
import json
import os
import signal
import subprocess
import sys

import pytest
import yaml

from mtl_tickets import checkpoint, rundir
from mtl_tickets.compare import recipe
from mtl_tickets.config import load_config
from mtl_tickets.inference import load_run
from mtl_tickets.rundir import RunInUse, RunLock
from mtl_tickets.schema import ConfigError, to_dict
from mtl_tickets.train import train

from .test_resume import checkpoint_step, start, train_cmd, wait_for_step
from .test_train import tiny_config


def test_a_finished_run_drops_its_checkpoints_unless_told_to_keep_them(tiny_model_dir, glue_slice, tmp_path):
    dropped = train(tiny_config(tiny_model_dir, glue_slice, tmp_path / "a", "tasks=[rte]"), progress=False)
    assert dropped.results["complete"] and not (dropped.output_dir / "checkpoints").exists()
    assert (dropped.output_dir / "best" / "model.safetensors").is_file()
    again = train(tiny_config(tiny_model_dir, glue_slice, tmp_path / "a", "tasks=[rte]"), progress=False)
    assert again.results == dropped.results  # reused, not resumed
    kept = train(tiny_config(tiny_model_dir, glue_slice, tmp_path / "b", "tasks=[rte]", "train.keep_checkpoints=true"),
                 progress=False)
    assert [p.name for p in (kept.output_dir / "checkpoints").glob("step-*")]
    cut = train(tiny_config(tiny_model_dir, glue_slice, tmp_path / "c", "tasks=[rte]", "train.max_steps=2"), progress=False)
    assert not cut.results["complete"] and (cut.output_dir / "checkpoints" / "step-0000002").is_dir()  # still to resume


def test_a_run_saved_before_the_fast_step_switches_reloads_as_it_ran(tiny_model_dir, tmp_path, monkeypatch):
    """cpu_bf16 and fused_optimizer came with default true: a run saved before them trained in fp32 with
    torch's unfused optimizer, so resuming, reusing and re-opening it read them as false (sliced, which
    changes no result, stays neutral); a config written today keeps the new defaults."""
    cfg = load_config(None, [f"model.name={tiny_model_dir}", f"output_dir={tmp_path / 'run'}"])
    fresh = to_dict(cfg)
    old = copy.deepcopy(fresh)
    del old["train"]["cpu_bf16"], old["train"]["fused_optimizer"]
    old["train"]["sliced"] = False
    assert [rundir.with_defaults(c)["train"][k] for c in (fresh, old) for k in ("cpu_bf16", "fused_optimizer")] == [
        True, True, False, False]
    differences = ["train.cpu_bf16: False -> True", "train.fused_optimizer: False -> True"]
    assert rundir.config_differences(rundir.with_defaults(old), fresh) == differences
    assert rundir.config_differences(recipe(rundir.with_defaults(old)), recipe(fresh)) == differences  # compare's reuse
    (tmp_path / "run" / "best").mkdir(parents=True)
    (tmp_path / "run" / "config.yaml").write_text(yaml.safe_dump(old))
    with pytest.raises(ConfigError, match=r"another config \(train.cpu_bf16: False -> True; train.fused_optimizer"):
        rundir.prepare(cfg)  # an unfinished fp32 run does not resume in bf16
    (tmp_path / "run" / "best" / "model.safetensors").touch()
    monkeypatch.setattr(checkpoint, "load_weights", lambda model, path: None)
    reopened, _ = load_run(tmp_path / "run")
    assert (reopened.train.cpu_bf16, reopened.train.fused_optimizer) == (False, False)


def test_a_path_written_another_way_resumes_the_same_run_and_another_place_is_refused(tmp_path, monkeypatch):
    """`runs/x`, `./runs/x` and the absolute path are one run directory (and one GLUE copy, cache aside)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "glue").mkdir()
    written = load_config(None, ["output_dir=runs/x", "data.glue_dir=glue", "data.cache_dir=cache-a"])
    rundir.prepare(written)
    (tmp_path / "runs" / "x" / "config.yaml").write_text(yaml.safe_dump(to_dict(written)))
    rundir.prepare(load_config(None, [f"output_dir={tmp_path}/runs/x", "data.glue_dir=./glue/", "data.cache_dir=b"]))
    with pytest.raises(ConfigError, match=r"another config \(data.glue_dir: 'glue' -> 'other'\)"):
        rundir.prepare(load_config(None, ["output_dir=./runs/x", "data.glue_dir=other"]))


def test_a_run_directory_locked_by_another_process_is_refused_naming_its_pid(tiny_model_dir, glue_slice, tmp_path):
    cfg = tiny_config(tiny_model_dir, glue_slice, tmp_path / "run", "tasks=[rte]")
    (tmp_path / "run").mkdir()
    with RunLock(tmp_path / "run"):  # flock: a second open of the file conflicts, even in one process
        with pytest.raises(RunInUse, match=rf"run is in use by another process \(PID {os.getpid()}\)"):
            train(cfg, progress=False)
    assert not (tmp_path / "run" / "checkpoints").exists()
    assert train(cfg, progress=False).results["complete"]  # released


def test_without_fcntl_runs_are_unguarded_but_still_run(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "fcntl", None)  # `import fcntl` raises ImportError, as on Windows
    spec = importlib.util.spec_from_file_location("mtl_tickets.rundir_without_fcntl", rundir.__file__)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.fcntl is None
    with module.RunLock(tmp_path), module.RunLock(tmp_path):
        pass


@pytest.mark.slow
def test_a_second_train_process_on_a_live_run_directory_exits_naming_the_first(tiny_model_dir, glue_slice, tmp_path):
    out = tmp_path / "run"
    cmd = train_cmd(tiny_model_dir, glue_slice, out)
    cmd[cmd.index("--epochs") + 1] = "500"  # long enough to be live while the second one starts
    first = start(cmd)
    wait_for_step(first, out, 1)
    second = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert first.poll() is None, "the first run ended before the second one was refused"
    assert second.returncode == 2
    assert second.stderr.strip() == (f"error: {out} is in use by another process (PID {first.pid}); wait for it to finish "
                                     "or stop it (it resumes from its checkpoint), or choose another --output-dir")
    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=300) == 130, first.stderr.read()
    logged = [(r["step"], tuple(r)) for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())]
    assert len(logged) == len(set(logged)) and len(list((out / "tensorboard").glob("events.out.tfevents.*"))) == 1


@pytest.mark.slow
def test_a_lock_left_by_a_killed_process_never_blocks_the_resume(tiny_model_dir, glue_slice, tmp_path):
    out = tmp_path / "run"
    killed = start(train_cmd(tiny_model_dir, glue_slice, out))
    wait_for_step(killed, out, 3)
    killed.send_signal(signal.SIGKILL)  # no cleanup runs: the lock file still names the dead process
    killed.wait()
    assert checkpoint_step(out) >= 3 and (out / ".lock").read_text().strip() == str(killed.pid)
    resumed = start(train_cmd(tiny_model_dir, glue_slice, out))
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read()
    assert json.loads((out / "results.json").read_text())["complete"]
