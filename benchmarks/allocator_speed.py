"""Freed memory kept for reuse (`train.keep_freed_memory`, protocol speed v1): the run's own training
step (`train_step` on CoLA's batches, the default encoder) for the full model and a random ticket
removing 30 % of heads and FFN neurons, each setting in its own child process (an allocator setting
holds for a whole process), the two settings alternated over the repeats. The children also record the
losses of their steps, which must be the same bit for bit: the setting moves buffers, not numbers.

    python benchmarks/allocator_speed.py --glue-dir ../shared/data/glue [--steps 20] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from common import default_model_and_ticket, write_result

SETTINGS = ("default", "keep")
MODES = ("full", "ticket")


def child(setting: str, glue_dir: str, steps: int, work: Path) -> dict:
    """Seconds per step and the losses of `steps` training steps of each mode, after 3 unmeasured ones."""
    from mtl_tickets import allocator, distributed, rundir
    from mtl_tickets.config import DEFAULT_MODEL, load_config
    from mtl_tickets.gates import EncoderShape
    from mtl_tickets.masks import TicketSet
    from mtl_tickets.train import start_session, train_step

    if setting == "keep":
        assert allocator.keep_freed_memory(), "not glibc: nothing to measure"
    model, ticket = default_model_and_ticket(0.3)
    TicketSet(DEFAULT_MODEL, EncoderShape.of(model.encoder), {"cola": ticket}).save(work / "ticket.json")
    del model
    out = {}
    for mode in MODES:
        sharing = ["sharing=tickets", f"tickets_file={work / 'ticket.json'}"] if mode == "ticket" else []
        cfg = load_config(None, ["tasks=[cola]", f"data.glue_dir={glue_dir}", f"output_dir={work / setting / mode}",
                                 "train.epochs=10", "train.lr=5e-5", "model.pooling=mean", *sharing])
        world = distributed.init()
        session = start_session(cfg, world, rundir.prepare(cfg))
        for _ in range(3):
            train_step(session, "cola")
        start, losses = time.perf_counter(), []
        for _ in range(steps):
            losses.append(train_step(session, "cola"))
        out[mode] = {"s_per_step": (time.perf_counter() - start) / steps, "losses": losses}
        del session
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--glue-dir", required=True)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", choices=SETTINGS, help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.glue_dir, args.steps, Path(args.work))))
        return
    runs: dict[str, list[dict]] = {s: [] for s in SETTINGS}
    with tempfile.TemporaryDirectory() as work:
        for repeat in range(args.repeats):
            for setting in SETTINGS:
                done = subprocess.run([sys.executable, __file__, "--child", setting, "--glue-dir", args.glue_dir,
                                       "--steps", str(args.steps), "--work", f"{work}/{repeat}"],
                                      capture_output=True, text=True, check=True)
                runs[setting].append(json.loads(done.stdout.strip().splitlines()[-1]))
                print(f"repeat {repeat + 1}/{args.repeats} {setting}: "
                      + ", ".join(f"{m} {runs[setting][-1][m]['s_per_step']:.3f} s/step" for m in MODES), flush=True)
    seconds = {s: {m: [r[m]["s_per_step"] for r in runs[s]] for m in MODES} for s in SETTINGS}
    median = {s: {m: statistics.median(t) for m, t in modes.items()} for s, modes in seconds.items()}
    same = all(r[m]["losses"] == runs["default"][0][m]["losses"] for s in SETTINGS for r in runs[s] for m in MODES)
    path = write_result("allocator_speed", {
        "what": f"train_step on CoLA (batch 32), default encoder, full model and a random 30 % ticket; {args.steps} "
                f"steps per child process after 3 unmeasured, {args.repeats} processes per setting, alternated",
        "threads": torch.get_num_threads(), "seconds_per_step": seconds, "median": median,
        "speedup_keep_vs_default": {m: median["default"][m] / median["keep"][m] for m in MODES},
        "losses_identical": same,
    })
    print("keep vs default: " + ", ".join(f"{m} {median['default'][m] / median['keep'][m]:.2f}x" for m in MODES)
          + f"; losses identical: {same} | {path}")


if __name__ == "__main__":
    main()
