"""A many-run recipe's run trained in a fresh process: the same numbers as in this process, its errors
raised here as themselves, and a stop or a death of either process losing nothing."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mtl_tickets import train as train_module
from mtl_tickets.config import load_config
from mtl_tickets.fresh_process import in_fresh_process, train_run
from mtl_tickets.schema import ConfigError
from mtl_tickets.tickets import find_super_tickets
from mtl_tickets.train import TrainingInterrupted

from .test_resume import checkpoint_step, start, wait_for_step
from .test_tickets import lean_sweep

pytestmark = pytest.mark.slow  # fresh processes, each importing torch


def test_a_sweep_scores_the_same_with_each_run_in_its_own_process(tiny_model_dir, glue_slice, tmp_path, monkeypatch):
    trained_here = []

    def counting_start(cfg, *args):
        trained_here.append(Path(cfg.output_dir).name)
        return start_session(cfg, *args)

    start_session = train_module.start_session
    monkeypatch.setattr(train_module, "start_session", counting_start)
    info = {}
    for name, own_process in (("here", "false"), ("fresh", "true")):
        cfg = lean_sweep(tiny_model_dir, glue_slice, tmp_path / name, "tickets.confirm_seeds=[2]",
                         f"train.process_per_run={own_process}")
        info[name] = find_super_tickets(cfg, progress=False).tickets["rte"].info
    assert sorted(trained_here) == ["full-s1", "full-s2", "winning-0.5-s1", "winning-0.5-s2"]  # only the "here" sweep's
    assert info["fresh"]["curve"] == info["here"]["curve"] and info["fresh"]["confirm"] == info["here"]["confirm"]


def test_a_failure_in_the_runs_process_is_raised_here_as_itself(tiny_model_dir, tmp_path):
    cfg = load_config(None, [f"model.name={tiny_model_dir}", f"data.glue_dir={tmp_path / 'no-glue'}",
                             f"output_dir={tmp_path / 'run'}", "train.process_per_run=true"])
    with pytest.raises(ConfigError) as here:
        train_module.train(cfg, progress=False)
    with pytest.raises(ConfigError) as fresh:
        train_run(cfg, progress=False)
    assert str(fresh.value) == str(here.value)
    assert any("in its fresh process" in note for note in fresh.value.__notes__)  # the child's traceback


def stop_the_parent_then_finish() -> int:
    """Run in the child: SIGTERM the command after the work is done, then return (the forwarded signal ignored)."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    os.kill(os.getppid(), signal.SIGTERM)
    time.sleep(1)
    return 1


def test_a_stop_that_comes_as_the_child_finishes_still_stops_the_command():
    with pytest.raises(TrainingInterrupted, match="stopped after the call finished"):
        in_fresh_process("the call", stop_the_parent_then_finish)


UNGUARDED_SCRIPT = """
import sys
import mtl_tickets as mt
from mtl_tickets import registry
from mtl_tickets.registry import TaskSpec, TsvSource

registry.register_task(TaskSpec(name="nli3", labels=["entailment", "neutral", "contradiction"],
                                tsv=TsvSource(dir="MNLI", text=["sentence1", "sentence2"], label="gold_label",
                                              dev=["dev_matched"])))
model, glue, out = sys.argv[1:]
cfg = mt.load_config(None, ["tasks=[nli3]", f"model.name={model}", f"data.glue_dir={glue}", f"output_dir={out}",
                            f"data.cache_dir={out}/cache", "train.epochs=1", "train.batch_size=8", "data.max_seq_len=24",
                            "tickets.kinds=[winning]", "tickets.sparsities=[0.5]", "tickets.confirm_seeds=[]",
                            "train.process_per_run=true"])
print(mt.find_super_tickets(cfg, progress=False).tickets["nli3"].info["kind"])
"""


def test_a_script_without_a_main_guard_runs_a_sweep_of_a_task_it_registered(tiny_model_dir, glue_slice, tmp_path):
    """No `if __name__ == "__main__"` and a task registered in code: the runs' processes neither run the
    script's top level again nor miss the task."""
    script = tmp_path / "sweep.py"
    script.write_text(UNGUARDED_SCRIPT)
    result = subprocess.run([sys.executable, str(script), str(tiny_model_dir), str(glue_slice), str(tmp_path / "out")],
                            capture_output=True, text=True, timeout=600, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() in (["full"], ["winning"])
    assert sorted(p.name for p in (tmp_path / "out" / "nli3").glob("*-s1")) == ["full-s1", "winning-0.5-s1"]


def sweep_cmd(tiny_model_dir, glue_slice, out):
    return [sys.executable, "-m", "mtl_tickets.cli", "tickets", "find", "--task", "rte", "--model", str(tiny_model_dir),
            "--glue-dir", str(glue_slice), "--output-dir", str(out), "--sparsities", "0.5", "--quiet",
            "--set", "tickets.kinds=[winning]", "--set", "tickets.confirm_seeds=[]", "--set", "train.epochs=40",
            "--set", "train.batch_size=2", "--set", "data.max_seq_len=24", "--set", "train.checkpoint_every=3",
            "--set", f"data.cache_dir={out.parent / 'cache'}"]


def run_process_of(parent_pid: int) -> int:
    """The fresh process training the run (Linux: /proc lists a process's children)."""
    deadline = time.time() + 60
    while time.time() < deadline:
        for pid in Path(f"/proc/{parent_pid}/task/{parent_pid}/children").read_text().split():
            if "child_main" in Path(f"/proc/{pid}/cmdline").read_text():
                return int(pid)
        time.sleep(0.05)
    raise AssertionError("no run process was started")


def gone(pid: int, timeout: float = 60) -> bool:
    deadline = time.time() + timeout
    while Path(f"/proc/{pid}").exists() and time.time() < deadline:
        time.sleep(0.05)
    return not Path(f"/proc/{pid}").exists()


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads child processes from Linux's /proc")
def test_a_stopped_or_killed_command_or_run_process_resumes(tiny_model_dir, glue_slice, tmp_path):
    """SIGTERM to the command reaches the run's process (it saves and stops); a run process killed
    outright is named; a command killed outright takes its run process with it (no orphan trains on,
    holding the lock); the same command then finishes the sweep."""
    out = tmp_path / "sweep"
    full = out / "rte" / "full-s1"
    cmd = sweep_cmd(tiny_model_dir, glue_slice, out)
    stopped = start(cmd)
    wait_for_step(stopped, full, 3)
    stopped.send_signal(signal.SIGTERM)
    _, stderr = stopped.communicate(timeout=120)
    assert stopped.returncode == 130 and "checkpoint saved" in stderr and "rerun the same command" in stderr, stderr
    assert checkpoint_step(full) >= 3

    killed_run = start(cmd)
    run_process = run_process_of(killed_run.pid)
    wait_for_step(killed_run, full, checkpoint_step(full) + 3)
    os.kill(run_process, signal.SIGKILL)  # as the kernel's out-of-memory killer would
    _, stderr = killed_run.communicate(timeout=120)
    assert killed_run.returncode == 3 and "died (exit code -9" in stderr and "Traceback" not in stderr, stderr

    killed_command = start(cmd)
    run_process = run_process_of(killed_command.pid)
    wait_for_step(killed_command, full, checkpoint_step(full) + 3)
    killed_command.kill()
    killed_command.communicate(timeout=60)
    assert gone(run_process) and not (full / "results.json").exists()  # it stopped, not trained to the end

    finished = start(cmd)
    _, stderr = finished.communicate(timeout=300)
    assert finished.returncode == 0, stderr
    assert (full / "results.json").is_file() and (out / "tickets.json").is_file()
