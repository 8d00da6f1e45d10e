"""Where the time of one dense training step goes (protocol speed v2): `train_step` on the first
batch of MRPC (2,000 examples, batch 32, the default encoder) under torch.profiler, for the plain step
(fp32, torch's default AdamW), the fused optimizer alone, and the default step (fused AdamW, bf16
autocast where the CPU has native bf16). Writes the phases (forward, backward, optimizer) and the ops
with the most self CPU time to results/profile_train_step.json.

    python benchmarks/profile_train_step.py --glue-dir ../shared/data/glue [--steps 5]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import defaultdict
from pathlib import Path

from torch.profiler import ProfilerActivity, profile

from common import write_result
from mtl_tickets.config import load_config
from mtl_tickets.distributed import World
from mtl_tickets.train import Session, start_session, train_step

VARIANTS = {"plain": ["train.cpu_bf16=false", "train.fused_optimizer=false"],
            "fused_optimizer": ["train.cpu_bf16=false"], "default": []}


def profiled_steps(s: Session, steps: int) -> dict:
    """Per step: wall ms, ms in backward and in the optimizer, self CPU ms of the top ops."""
    task = s.cfg.tasks[0]

    def step() -> float:
        s.streams[task].seek([0, 0])  # the same batch every step
        start = time.perf_counter()
        train_step(s, task)
        return time.perf_counter() - start

    step(), step()  # optimizer state allocated, kernels warm
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        walls = [step() for _ in range(steps)]
    self_ms: dict[str, float] = defaultdict(float)
    backward = optimizer = 0.0
    for event in prof.key_averages():
        self_ms[event.key] += event.self_cpu_time_total / 1000 / steps
        if event.key.startswith("autograd::engine::evaluate_function"):
            backward += event.cpu_time_total / 1000 / steps
        if event.key.startswith("Optimizer.step#"):
            optimizer += event.cpu_time_total / 1000 / steps
    wall = statistics.median(walls) * 1000
    top = dict(sorted(self_ms.items(), key=lambda kv: -kv[1])[:12])
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))
    return {"step_ms": wall, "phases_ms": {"backward": backward, "optimizer": optimizer,
                                           "forward_and_rest": wall - backward - optimizer},
            "top_ops_self_ms": top}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--glue-dir", required=True)
    parser.add_argument("--task", default="mrpc")
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    base = [f"data.glue_dir={args.glue_dir}", "data.max_train_examples=2000", f"tasks=[{args.task}]"]
    result = {}
    for name, extra in VARIANTS.items():
        out = Path(f"runs/bench-profile-{name}")
        out.mkdir(parents=True, exist_ok=True)
        session = start_session(load_config(None, [*base, *extra]), World(), out)
        print(f"== {name}")
        result[name] = profiled_steps(session, args.steps)
    session.streams[args.task].seek([0, 0])
    batch = session.streams[args.task].next()
    mask = batch["attention_mask"]
    print(write_result("profile_train_step", {
        "what": f"one training step on the first {args.task} batch ({tuple(mask.shape)}: {int(mask.sum())} real of "
                f"{mask.numel()} padded tokens), median wall of {args.steps} profiled steps, ms",
        "variants": {name: " ".join(extra) or "the defaults" for name, extra in VARIANTS.items()}, **result}))


if __name__ == "__main__":
    main()
