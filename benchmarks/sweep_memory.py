"""A process's memory over a whole super-ticket sweep (protocol speed v1). A sweep trains run after run in
one process, each with its own model and pruned working copy; the mini-GLUE v2 grid's STS-B sweep held 12 GB
resident (9.4 GB of it heap) after 16 runs when freed memory was kept for reuse and never given back.
Variants: that setting; freed memory kept while a run trains and given back as it ends (the default now);
not kept (`train.keep_freed_memory=false`, glibc's own behaviour); and the default with oneDNN's kernel
cache at its own size (1,024 compiled kernels instead of kernel_cache.py's 16,384), which tells how much
of what a process keeps between runs is compiled kernels. Those four train every run in the sweep's own
process (`train.process_per_run=false`); the fifth, the default now, trains each in a fresh one.

    python benchmarks/sweep_memory.py --glue-dir ../shared/data/glue --task stsb
    python benchmarks/sweep_memory.py --glue-dir ../shared/data/glue --task rte --result sweep_memory_rte \
        --variants "kept, given back after each run" "a fresh process per run"

Each variant is the real `mtl-tickets tickets find` in a child process, its runs short (memory, not
accuracy, is measured). Reported: the peak resident memory of the child and of any process it started (the
kernel's count), the child's resident memory as each run returned, the largest run process so far as each
returned (fresh processes only), the wall time, and the super ticket each chose (neither the allocator nor
the process may change a number). Each finished variant is written to `<--result>.json` in
benchmarks/results/ at once; rerunning skips it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from common import RESULTS, write_result

from mtl_tickets import kernel_cache
from mtl_tickets.tickets import curve_cell

# the child: the CLI itself, logging its resident memory as each run returns (after the run gave back what it
# freed, where it does), with the before-variant's allocator patched to never give memory back
CHILD = """
import json, resource, sys
from mtl_tickets import allocator, cli, tickets
variant, log, benchmarks = sys.argv.pop(1), sys.argv.pop(1), sys.argv.pop(1)
sys.path.insert(0, benchmarks)
from common import resident_mib
if variant == "never":
    allocator.give_back_freed_memory = lambda: None
train_run = tickets.train_run
def train_and_log(cfg, progress=True):
    result = train_run(cfg, progress)
    resident = resident_mib()
    run_processes = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    with open(log, "a") as f:
        f.write(json.dumps([result.output_dir.name, round(resident), round(run_processes)]) + "\\n")
    return result
tickets.train_run = train_and_log
sys.argv[0] = "mtl-tickets"
cli.main()
"""
ONE_PROCESS = "train.process_per_run=false"
VARIANTS = {  # name: the child's allocator, settings, environment
    "kept, never given back": ("never", [ONE_PROCESS], {}),
    "kept, given back after each run": ("default", [ONE_PROCESS], {}),
    "not kept": ("default", ["train.keep_freed_memory=false", ONE_PROCESS], {}),
    "kept, given back; oneDNN's default kernel cache": ("default", [ONE_PROCESS], {kernel_cache.VARIABLE: "1024"}),
    "a fresh process per run": ("default", ["train.process_per_run=true"], {}),
}


def run_variant(name: str, args: argparse.Namespace) -> dict:
    allocator, settings, env = VARIANTS[name]
    out = Path(args.work_dir) / "".join(c if c.isalnum() else "-" for c in name)
    shutil.rmtree(out, ignore_errors=True)  # a whole sweep each time: a resumed one would skip finished runs
    out.mkdir(parents=True)
    log = out / "resident.jsonl"
    recipe = ["tickets", "find", "--config", args.config, "--task", args.task,
              "--glue-dir", args.glue_dir, "--output-dir", str(out), "--quiet", f"--epochs={args.epochs}",
              f"--max-train-examples={args.max_train_examples}", f"--max-eval-examples={args.max_eval_examples}",
              f"--set=tickets.confirm_seeds={args.confirm_seeds}", *(f"--set={s}" for s in settings)]
    start = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-c", CHILD, allocator, str(log), str(Path(__file__).resolve().parent), *recipe],
                             env={**os.environ, **env})
    _, status, usage = os.wait4(child.pid, 0)
    if status != 0:
        raise SystemExit(f"{name}: tickets find exited with status {status}")
    chosen = json.loads((out / "tickets.json").read_text())["tickets"][args.task]
    returned = [json.loads(line) for line in log.read_text().splitlines()]
    return {"command": " ".join(recipe), "environment": env, "seconds": time.perf_counter() - start,
            "peak_mib": round(usage.ru_maxrss / 1024),
            "as_each_run_returned": [{"run": run, "mib": mib, "largest_run_process_mib": largest}
                                     for run, mib, largest in returned],  # full-s1 twice: trained, then read as a cell
            "super_ticket": {k: chosen[k] for k in ("kind", "sparsity")},
            "super_ticket_dev": curve_cell(chosen, chosen["kind"], chosen["sparsity"]).dev_best}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--glue-dir", required=True)
    parser.add_argument("--task", default="stsb")
    parser.add_argument("--config", default="configs/tickets_mini_glue.yaml")
    parser.add_argument("--work-dir", default="runs/sweep_memory")
    parser.add_argument("--epochs", type=float, default=0.5, help="per run: short, since memory, not accuracy, is measured")
    parser.add_argument("--max-train-examples", type=int, default=320, help="train subsample per run")
    parser.add_argument("--max-eval-examples", type=int, default=128, help="dev subsample per run")
    parser.add_argument("--confirm-seeds", default="[2, 3]", help="seed reruns after the grid (14 runs in all with two)")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS), help="which to run, in order")
    parser.add_argument("--result", default="sweep_memory", help="results file name, in benchmarks/results/")
    args = parser.parse_args()
    path = RESULTS / f"{args.result}.json"
    done = json.loads(path.read_text())["variants"] if path.is_file() else {}
    what = (f"tickets find on {args.task}, {args.config}, {args.epochs:g} epoch(s) of {args.max_train_examples} examples a run, "
            f"{args.max_eval_examples} dev examples")
    for name in args.variants:
        if name not in done:
            done[name] = run_variant(name, args)
            write_result(args.result, {"what": what, "variants": done})
            print(f"{name}: peak {done[name]['peak_mib']} MiB over {len(done[name]['as_each_run_returned'])} runs, "
                  f"{done[name]['seconds'] / 60:.1f} min, super ticket {done[name]['super_ticket']}", flush=True)


if __name__ == "__main__":
    main()
