"""What oneDNN's primitive cache holds in memory (protocol speed v1): the run's own training step
(`train_step`, RTE's batches as a run meets them, the default encoder, a ticket removing 30 % of heads
and FFN neurons, on its pruned working copy) in a child process per cache capacity, the resident memory
recorded as steps go.
Dynamic padding gives a new batch length, so new matmul shapes, most steps; each shape's kernels stay in
the cache until it is full. One child repeats one batch (one shape) at the package's capacity: the
control that tells memory kept per shape from memory kept per step. The last pads batch lengths to a
multiple of 8 (`data.pad_to_multiple_of`), fewer shapes for the same batches. Variants already in the
result file are kept, not rerun.

    python benchmarks/kernel_cache_memory.py --glue-dir ../shared/data/glue [--steps 100]

The mini-GLUE v2 grid's RTE sweep process held 14-15 GB resident after about 40 minutes, with freed memory
kept and without (benchmarks/results/speed.md). Written to kernel_cache_memory.json in benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import RESULTS, default_model_and_ticket, resident_mib, write_result

from mtl_tickets import kernel_cache

VARIANTS = {  # name: (oneDNN's cache capacity, one batch repeated, data.pad_to_multiple_of)
    "16,384 (package)": ("16384", False, 1),
    "1,024 (oneDNN's default)": ("1024", False, 1),
    "0 (no cache)": ("0", False, 1),
    "16,384, one batch repeated": ("16384", True, 1),
    "16,384, batch lengths padded to a multiple of 8": ("16384", False, 8),
}


def child(glue_dir: str, steps: int, one_batch: bool, multiple: int, work: Path) -> dict:
    """Resident memory and seconds a step every 10 steps, and the batch lengths met."""
    from mtl_tickets import distributed, rundir
    from mtl_tickets.config import DEFAULT_MODEL, load_config
    from mtl_tickets.gates import EncoderShape
    from mtl_tickets.masks import TicketSet
    from mtl_tickets.train import start_session, train_step

    model, ticket = default_model_and_ticket(0.3)
    TicketSet(DEFAULT_MODEL, EncoderShape.of(model.encoder), {"rte": ticket}).save(work / "ticket.json")
    del model
    cfg = load_config("configs/tickets_mini_glue.yaml", [
        "tasks=[rte]", f"data.glue_dir={glue_dir}", f"output_dir={work / 'run'}", "train.epochs=10", "train.lr=5e-5",
        "sharing=tickets", f"tickets_file={work / 'ticket.json'}", f"data.pad_to_multiple_of={multiple}"])
    session = start_session(cfg, distributed.init(), rundir.prepare(cfg))
    stream, lengths = session.streams["rte"], []
    take = stream.next
    first = take(session.world)

    def next_batch(world):
        batch = first if one_batch else take(world)
        lengths.append(batch["input_ids"].shape[1])
        return batch

    stream.next = next_batch
    trace, last = [], time.perf_counter()
    for step in range(1, steps + 1):
        train_step(session, "rte")
        if step % 10 == 0:
            now = time.perf_counter()
            trace.append({"step": step, "resident_mib": round(resident_mib()), "lengths_met": len(set(lengths)),
                          "s_per_step": round((now - last) / 10, 3)})
            last = now
    return {"trace": trace}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--glue-dir", required=True)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _, one_batch, multiple = VARIANTS[args.child]
        print(json.dumps(child(args.glue_dir, args.steps, one_batch, multiple, Path(args.work))))
        return
    path = RESULTS / "kernel_cache_memory.json"
    done = json.loads(path.read_text())["variants"] if path.is_file() else {}
    with tempfile.TemporaryDirectory() as work:
        for name, (capacity, _, _) in VARIANTS.items():
            if name in done:
                continue
            env = {**os.environ, kernel_cache.VARIABLE: capacity}
            out = subprocess.run([sys.executable, __file__, "--child", name, "--glue-dir", args.glue_dir,
                                  "--steps", str(args.steps), "--work", f"{work}/{len(done)}"],
                                 env=env, capture_output=True, text=True, check=True)
            trace = json.loads(out.stdout.strip().splitlines()[-1])["trace"]
            first, last = trace[0], trace[-1]
            grown, new_lengths = last["resident_mib"] - first["resident_mib"], last["lengths_met"] - first["lengths_met"]
            done[name] = {"trace": trace, "grown_mib": grown, "new_lengths": new_lengths,
                          "mib_per_new_length": grown / new_lengths if new_lengths else None}
            write_result("kernel_cache_memory", {
                "what": f"train_step on RTE (batch 32, dynamic padding), default encoder, a ticket removing 30 % of heads "
                        f"and FFN neurons, on its pruned copy; {args.steps} steps per child process, one process per "
                        f"variant (n = 1)", "variants": done})
            print(f"{name}: {first['resident_mib']} -> {last['resident_mib']} MiB from step {first['step']} to "
                  f"{last['step']}, {new_lengths} new batch lengths | {path}", flush=True)


if __name__ == "__main__":
    main()
