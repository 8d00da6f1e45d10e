"""Data-parallel training: a 2-process gloo run under torchrun agrees with the single-process run on
the same global batch (dropout off, so only float summation order differs), with full sharing and with
adaptive sharing (every rank runs the same learned gates at every step, so the masks learned agree)."""

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mtl_tickets import checkpoint
from mtl_tickets.masks import TicketSet

from .test_multitask import ticket_file

TORCHRUN = Path(sys.executable).with_name("torchrun")
pytestmark = pytest.mark.slow  # three processes


def free_port() -> int:
    """A port nothing listens on now. A fixed port can still be held by the rendezvous of an earlier
    torchrun that is closing (or by another program), which fails the run before it starts."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def args(tiny_model_dir, glue_slice, out):
    return ["train", "--task", "rte,stsb", "--model", str(tiny_model_dir), "--glue-dir", str(glue_slice),
            "--epochs", "1", "--batch-size", "4", "--max-seq-len", "24", "--output-dir", str(out), "--quiet",
            "--set", "model.dropout=0", "--set", "model.head_dropout=0", "--set", "train.sampler=mtdnn",
            "--set", "train.keep_checkpoints=true",
            "--set", f"data.cache_dir={out.parent / 'cache'}"]


def sharing_args(sharing, tmp_path):
    if sharing == "full":
        return []
    return ["--set", "sharing=adaptive", "--set", f"tickets_file={ticket_file(tmp_path / 't.json')}", "--set", "adaptive.lr=0.1",
            "--set", "adaptive.margin=0.1", "--set", "adaptive.warmup=0", "--set", "adaptive.cooldown=0"]


@pytest.mark.skipif(not TORCHRUN.exists() and not shutil.which("torchrun"), reason="torchrun not installed")
@pytest.mark.parametrize("sharing", ["full", "adaptive"])
def test_two_process_gloo_run_matches_one_process(sharing, tiny_model_dir, glue_slice, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    extra = sharing_args(sharing, tmp_path)
    single = subprocess.run([sys.executable, "-m", "mtl_tickets.cli", *args(tiny_model_dir, glue_slice, tmp_path / "one"), *extra],
                            capture_output=True, text=True, env=env, timeout=300)
    assert single.returncode == 0, single.stderr
    torchrun = str(TORCHRUN) if TORCHRUN.exists() else "torchrun"
    multi = subprocess.run([torchrun, "--nproc-per-node", "2", "--master-port", str(free_port()), "-m", "mtl_tickets.cli",
                            *args(tiny_model_dir, glue_slice, tmp_path / "two"), *extra], capture_output=True, text=True, env=env,
                           timeout=300)
    assert multi.returncode == 0, multi.stderr[-3000:]
    one = json.loads((tmp_path / "one" / "results.json").read_text())
    two = json.loads((tmp_path / "two" / "results.json").read_text())
    assert two["world_size"] == 2 and one["task_steps"] == two["task_steps"]
    if sharing == "adaptive":
        learned = [TicketSet.load(tmp_path / run / "learned_tickets.json").tickets for run in ("one", "two")]
        assert learned[0] == learned[1] and learned[0] != TicketSet.load(tmp_path / "t.json").tickets
    a = load_file(str(checkpoint.latest(tmp_path / "one" / "checkpoints") / "model.safetensors"))
    b = load_file(str(checkpoint.latest(tmp_path / "two" / "checkpoints") / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a if not a[k].is_floating_point())  # which units a task may take, and how many
    a, b = ({k: v for k, v in w.items() if v.is_floating_point()} for w in (a, b))
    # Tolerance: summation order differs, and Adam turns float noise on near-zero gradients into up to
    # one learning-rate step (1e-4) per step for those few entries; on average the weights agree to 1e-6.
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    mean = sum(float((a[k] - b[k]).abs().sum()) for k in a) / sum(a[k].numel() for k in a)
    assert worst < 1e-3 and mean < 1e-6, f"weights differ by up to {worst} (mean {mean})"
    for task, splits in one["last"]["tasks"].items():
        for split, metrics in splits.items():
            for metric, value in metrics.items():
                # 24 dev rows of a random tiny model: a rank statistic moves with tiny score changes
                assert abs(value - two["last"]["tasks"][task][split][metric]) < 3.0, (task, metric)
