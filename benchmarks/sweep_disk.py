"""Disk a super-ticket sweep needs: measured on a tiny sweep of one task over the default grid (the full
model, 5 winning, 2 random and 2 losing tickets, the default confirm seeds), and computed for the default
encoder from the measured size of its weights and of one resumable checkpoint.

    python benchmarks/sweep_disk.py --glue-dir ../shared/data/glue
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

from mtl_tickets import checkpoint, registry
from mtl_tickets.config import Config, load_config
from mtl_tickets.optim import build_optimizer, build_scheduler
from mtl_tickets.tickets import find_super_tickets
from mtl_tickets.build import build_model

from common import write_result
from kill_resume import make_inputs

MIB = 2**20
WEIGHT_FILES = ("model.safetensors", "trainer.pt")


def file_bytes(folder: Path, names: tuple[str, ...] | None = None) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and (names is None or p.name in names))


def default_encoder_sizes(root: Path) -> dict[str, int]:
    """Bytes of the default encoder's best/ weights and of one checkpoint (weights, Adam state, RNG)."""
    cfg = Config()
    model = build_model(cfg, registry.resolve(["rte"]), torch.device("cpu"))
    optimizer = build_optimizer(model, cfg.train)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()  # Adam's two moments now exist, as in every checkpoint after step 1
    scheduler = build_scheduler(optimizer, 10, cfg.train.warmup)
    path = checkpoint.save(root / "checkpoints", model, optimizer, scheduler, checkpoint.TrainState(step=1))
    checkpoint.save_weights(model, root / "best.safetensors")
    return {"best": (root / "best.safetensors").stat().st_size, "checkpoint": file_bytes(path)}


def tiny_sweep(root: Path, glue_dir: Path) -> dict:
    """Run the default grid on a tiny encoder; what its cells keep, and the bytes of the whole sweep."""
    model_dir, glue = make_inputs(root, glue_dir)
    out = root / "sweep"
    find_super_tickets(load_config(None, [f"model.name={model_dir}", f"data.glue_dir={glue}", f"output_dir={out}",
                                          f"data.cache_dir={root / 'cache'}", "tasks=[rte]", "train.epochs=2",
                                          "train.batch_size=8", "data.max_seq_len=48"]), progress=False)
    cells = sorted(p for p in (out / "rte").iterdir() if (p / "results.json").is_file())
    return {"cells": len(cells),
            "cells_with_best_weights": [p.name for p in cells if (p / "best" / "model.safetensors").is_file()],
            "cells_with_checkpoints": [p.name for p in cells if (p / "checkpoints").is_dir()],
            "bytes": file_bytes(out), "weight_bytes": file_bytes(out, WEIGHT_FILES)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--glue-dir", required=True, type=Path)
    parser.add_argument("--tasks", type=int, default=5, help="Tasks of the sweep the estimate is for (mini-GLUE: 5).")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        sizes = default_encoder_sizes(Path(tmp) / "default")
        tiny = tiny_sweep(Path(tmp) / "tiny", args.glue_dir)
    per_task = len(tiny["cells_with_best_weights"]) * sizes["best"] + len(tiny["cells_with_checkpoints"]) * sizes["checkpoint"]
    live_run = 2 * sizes["checkpoint"] + sizes["best"]  # the cell training now: two checkpoints and its best weights
    summary = {"what": "disk of a super-ticket sweep over the default grid", "tiny_sweep": tiny,
               "default_encoder_mib": {"best_weights": round(sizes["best"] / MIB, 1), "checkpoint": round(sizes["checkpoint"] / MIB, 1),
                                       f"finished_sweep_{args.tasks}_tasks": round(args.tasks * per_task / MIB),
                                       f"peak_{args.tasks}_tasks": round((args.tasks * per_task + live_run) / MIB),
                                       "logs_not_counted": "metrics.jsonl, TensorBoard events, results.json: kilobytes a run"}}
    print(json.dumps(summary))
    write_result("sweep_disk", summary)


if __name__ == "__main__":
    main()
