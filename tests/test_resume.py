"""Exact resume: a run SIGKILLed at several points and restarted ends exactly like an uninterrupted
one; SIGTERM saves a checkpoint and exits cleanly."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from safetensors.torch import load_file

from mtl_tickets import checkpoint

pytestmark = pytest.mark.slow  # subprocesses killed and restarted


def train_cmd(tiny_model_dir, glue_slice, out):
    return [sys.executable, "-m", "mtl_tickets.cli", "train", "--task", "rte,stsb", "--model", str(tiny_model_dir),
            "--glue-dir", str(glue_slice), "--epochs", "4", "--batch-size", "2", "--max-seq-len", "24",
            "--output-dir", str(out), "--quiet", "--set", "train.checkpoint_every=3", "--set", "train.sampler=dynamic",
            "--set", "train.keep_checkpoints=true",
            "--set", f"data.cache_dir={out.parent / 'cache'}"]


def checkpoint_step(out) -> int:
    try:
        return int((out / "checkpoints" / "latest").read_text().strip().split("-")[1])
    except (OSError, IndexError, ValueError):
        return 0


def start(cmd):
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})


def wait_for_step(proc, out, step, timeout=120):
    deadline = time.time() + timeout
    while checkpoint_step(out) < step and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)


def final_weights(out):
    return load_file(str(checkpoint.latest(out / "checkpoints") / "model.safetensors"))


def test_sigkill_at_several_points_then_resume_equals_the_uninterrupted_run(tiny_model_dir, glue_slice, tmp_path):
    straight = tmp_path / "straight"
    assert subprocess.run(train_cmd(tiny_model_dir, glue_slice, straight), capture_output=True).returncode == 0
    killed = tmp_path / "killed"
    cmd = train_cmd(tiny_model_dir, glue_slice, killed)
    kills = 0
    for target in (4, 19, 40):
        proc = start(cmd)
        wait_for_step(proc, killed, target)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
    assert kills >= 2, "the run finished before it could be killed"
    final = start(cmd)
    assert final.wait(timeout=300) == 0, final.stderr.read()
    a, b = final_weights(straight), final_weights(killed)
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
    ra = json.loads((straight / "results.json").read_text())
    rb = json.loads((killed / "results.json").read_text())
    assert ra["last"] == rb["last"] and ra["task_steps"] == rb["task_steps"]


def test_sigterm_saves_a_checkpoint_and_exits_cleanly(tiny_model_dir, glue_slice, tmp_path):
    out = tmp_path / "run"
    proc = start(train_cmd(tiny_model_dir, glue_slice, out))
    wait_for_step(proc, out, 3)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "checkpoint saved" in stderr and "rerun the same command to resume" in stderr
    assert checkpoint_step(out) >= 3
