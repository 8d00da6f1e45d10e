"""Helpers shared by the speed benchmarks: timing, machine description, result files."""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

RESULTS = Path(__file__).parent / "results"
PROTOCOL = "speed v1"


def time_alternating(fns: dict[str, Callable[[], None]], repeats: int, burn_in: int = 2) -> dict[str, dict[str, float]]:
    """Seconds per call of each function, run in alternation (burn-in first): min / median / max."""
    for fn in fns.values():
        for _ in range(burn_in):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: {"min": min(t), "median": statistics.median(t), "max": max(t)} for name, t in times.items()}


def machine() -> dict:
    cpu = ""
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    import transformers

    return {"cpu": cpu or platform.processor(), "cores": os.cpu_count(), "threads": torch.get_num_threads(),
            "torch": torch.__version__, "transformers": transformers.__version__, "python": platform.python_version(),
            "device": "cuda" if torch.cuda.is_available() else "cpu"}


def resident_mib() -> float:
    """This process's resident memory in MiB (Linux: /proc/self/statm)."""
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def write_result(name: str, result: dict) -> Path:
    """benchmarks/results/<name>.json with protocol, command, machine."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {"protocol": PROTOCOL, "command": "python " + " ".join(sys.argv), "machine": machine(),
               "git": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip(),
               **result}
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=1))
    return path


LIGHT = ("results.json", "config.yaml", "tickets.json", "learned_tickets.json", "metrics.jsonl")


def mirror(src: Path, dst: Path) -> None:
    """Copy what the next session needs to skip finished work from src to dst: the light files of
    finished runs (not their weights), importance scores, ticket files (a sweep's super tickets at any
    depth, the fixed tickets a compare contender draws per seed, tickets-s<seed>.json), curves and tables."""
    for path in src.rglob("*"):
        finished_run = path.name in LIGHT and (path.parent / "results.json").is_file()
        super_tickets = path.name == "tickets.json" and not (path.parent / "config.yaml").exists()  # not a run's copy
        keep = (finished_run or super_tickets or path.name == "scores.json" or path.parent.name == "tickets"
                or path.match("tickets-s*.json") or path.suffix in (".csv", ".png", ".md"))
        if path.is_file() and keep and "checkpoints" not in path.parts and "tensorboard" not in path.parts:
            target = dst / path.relative_to(src)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)


def run_mirrored(cmd: list[str], src: Path, dst: Path, every: float = 60) -> None:
    """Run `cmd`, mirroring src into dst every minute and at the end (also when it fails)."""
    import threading

    done = threading.Event()

    def keep_mirroring() -> None:
        while not done.wait(every):
            mirror(src, dst)

    threading.Thread(target=keep_mirroring, daemon=True).start()
    try:
        subprocess.run(cmd, check=True)
    finally:
        done.set()
        mirror(src, dst)


def default_model_and_ticket(sparsity: float):
    """The default encoder (RTE head) and a winning ticket removing `sparsity` of its heads and FFN
    neurons, from random scores: speed depends on how many units go, not on which."""
    import numpy as np

    from mtl_tickets import registry
    from mtl_tickets.build import build_model
    from mtl_tickets.config import Config
    from mtl_tickets.gates import EncoderShape
    from mtl_tickets.importance import Scores
    from mtl_tickets.pruning import levels, nested_tickets

    torch.manual_seed(0)
    model = build_model(Config(), registry.resolve(["rte"]))
    shape = EncoderShape.of(model.encoder)
    rng = np.random.default_rng(0)
    scores = Scores(rng.random((shape.layers, shape.heads)), rng.random((shape.layers, shape.ffn)))
    return model, nested_tickets(scores, levels([sparsity], "units", shape, "neuron"), "winning")[sparsity]


def dense_and_pruned(sparsity: float):
    """(dense model in eval mode, its physically pruned copy, the ticket) for the inference benchmarks."""
    import copy

    from mtl_tickets.export import prune_encoder

    dense, ticket = default_model_and_ticket(sparsity)
    dense.eval()
    pruned = copy.deepcopy(dense)
    prune_encoder(pruned.encoder, ticket)
    return dense, pruned, ticket


def random_batch(batch_size: int, seq_len: int, labels: bool = False) -> dict[str, torch.Tensor]:
    """Token ids from the middle of the vocabulary, no padding."""
    batch = {"input_ids": torch.randint(1000, 20000, (batch_size, seq_len)),
             "attention_mask": torch.ones(batch_size, seq_len, dtype=torch.long)}
    if labels:
        batch["labels"] = torch.randint(0, 2, (batch_size,))
    return batch
