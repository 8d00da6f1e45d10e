"""Training throughput of mtl-tickets against the Hugging Face `Trainer` on the same model and the same
batches, and model FLOPs utilisation against matrix-multiply peaks measured in the same run
(protocol speed v2). Target: at least 1.25x the Trainer.

What makes it fair:
- the same batches in the same order: mtl-tickets' task stream draws them (length-grouped, dynamic
  padding), and the Trainer reads that very list, one collated batch per item, sequentially;
- tokens as processed: the attention-mask ones (real tokens) and B x T (padded positions) of the timed
  batches, summed, not estimated from a mean length;
- setup excluded on both sides: each side's clock runs from the end of its `--warmup` steps to the end
  of its last step (the Trainer's through a step-end callback), every call after a full burn-in call;
- repeats alternate every contender and the fp32 and bf16 matmul peaks, min / median / max of each;
- the Trainer as users run it: its default optimizer (fused AdamW on torch >= 2.8) in fp32, and also
  with its `torch_compile=True` and `bf16=True` options (compile warm-up reported on its own).

    python benchmarks/train_throughput.py --glue-dir ../shared/data/glue --task mrpc [--steps 20 --repeats 5] [--epochs 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from common import write_result
from mtl_tickets.build import build_model, trainable_specs
from mtl_tickets.config import load_config
from mtl_tickets.data import TaskStream
from mtl_tickets.distributed import World
from mtl_tickets.evaluation import evaluate
from mtl_tickets.train import Session, start_session, train_step

OURS = {"mtl-tickets": [], "mtl-tickets-fp32": ["train.cpu_bf16=false"]}  # the default step; the step in fp32
TRAINERS = {"hf-trainer": {}, "hf-trainer-compile": {"torch_compile": True}, "hf-trainer-bf16": {"bf16": True}}


class TrainerAdapter(nn.Module):
    """Our model behind the Trainer's calling convention (keyword tensors in, loss and logits out)."""

    def __init__(self, model, task: str):
        super().__init__()
        self.model, self.task = model, task

    def forward(self, input_ids, attention_mask, token_type_ids=None, labels=None):
        batch = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
        logits = self.model(batch, self.task)
        return {"loss": self.model.loss(logits, labels, self.task), "logits": logits}


class Batches(torch.utils.data.Dataset):
    """Already collated batches, one per item: the Trainer reads them with batch size 1, in order."""

    def __init__(self, batches: list[dict[str, torch.Tensor]]):
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return self.batches[i]


def step_clock():
    """A Trainer callback recording the time at the end of every optimizer step."""
    from transformers import TrainerCallback

    class StepClock(TrainerCallback):
        def __init__(self):
            self.ends: list[float] = []

        def on_step_end(self, args, state, control, **kwargs):
            self.ends.append(time.perf_counter())

    return StepClock()


def build_trainer(cfg, model: TrainerAdapter, batches: list[dict], options: dict, out: str):
    """A Trainer reading `batches` in order; its settings are its defaults, with our learning rate,
    schedule, weight decay and clipping. Accelerate keeps one global state (compilation, precision),
    set by the first Trainer built: reset it, so each Trainer gets its own options."""
    from accelerate.state import AcceleratorState
    from transformers import Trainer, TrainingArguments

    AcceleratorState._reset_state(True)
    args = TrainingArguments(
        output_dir=out, per_device_train_batch_size=1, learning_rate=cfg.train.lr, weight_decay=cfg.train.weight_decay,
        warmup_steps=cfg.train.warmup, max_grad_norm=cfg.train.max_grad_norm, max_steps=len(batches),
        train_sampling_strategy="sequential", report_to=[], save_strategy="no", logging_strategy="no",
        eval_strategy="no", use_cpu=not torch.cuda.is_available(), seed=cfg.train.seed, disable_tqdm=True, **options)
    clock = step_clock()
    trainer = Trainer(model=model, args=args, train_dataset=Batches(batches), data_collator=lambda items: items[0],
                      callbacks=[clock])
    return trainer, clock


def adapted_model(cfg) -> TrainerAdapter:
    """A fresh copy of the model, as the Trainer calls it."""
    torch.manual_seed(cfg.train.seed)
    return TrainerAdapter(build_model(cfg, trainable_specs(cfg)), cfg.tasks[0])


def ours_run(session: Session, steps: int) -> Callable[[], list[float]]:
    """From the start of the task stream again, `steps` steps; the time at the end of each."""
    task = session.cfg.tasks[0]

    def run() -> list[float]:
        session.streams[task].seek([0, 0])
        ends = []
        for _ in range(steps):
            train_step(session, task)
            ends.append(time.perf_counter())
        return ends

    return run


def trainer_run(cfg, batches: list[dict], options: dict, name: str) -> Callable[[], list[float]]:
    """A new Trainer on the same model every call (its set-up is before the clock starts; a compiled
    model stays compiled); the time at the end of each step."""
    model = adapted_model(cfg)

    def run() -> list[float]:
        trainer, clock = build_trainer(cfg, model, batches, options, f"runs/bench-throughput-{name}")
        trainer.train()
        return clock.ends

    return run


def matmul_peak(dtype: torch.dtype, n: int = 1536, repeats: int = 5) -> float:
    """FLOP/s of a square matrix multiply in `dtype` (best of repeats)."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def model_flops(encoder, batches: list[dict]) -> float:
    """Forward + backward FLOPs of the encoder layers on the padded batches: 6 per weight per token,
    plus attention's 12 L T D per token (scores and the weighted sum, fwd + bwd)."""
    c = encoder.config
    layer_params = sum(p.numel() for p in encoder.encoder.parameters())
    total = 0.0
    for batch in batches:
        B, T = batch["input_ids"].shape
        total += B * T * (6 * layer_params + 12 * c.num_hidden_layers * T * c.hidden_size)
    return total


def spread(values: list[float]) -> dict[str, float]:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--glue-dir", required=True)
    parser.add_argument("--task", default="mrpc", help="a classification task of mini-GLUE v1 (2,000 train examples)")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per repeat")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps at the start of every call")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--epochs", type=float, default=0, help="then train this many full epochs with each and compare dev")
    args = parser.parse_args()
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="inductor-")  # compile warm-up measured cold
    base = [f"data.glue_dir={args.glue_dir}", "data.max_train_examples=2000", f"tasks=[{args.task}]",
            f"train.epochs={args.epochs or 1}"]
    cfg = load_config(None, [*base, f"output_dir=runs/bench-throughput-{args.task}"])
    sessions = {}
    for name, extra in OURS.items():
        scratch = Path(f"runs/bench-throughput-{name}")
        scratch.mkdir(parents=True, exist_ok=True)
        sessions[name] = start_session(load_config(None, [*base, *extra]), World(), scratch)
    data = sessions["mtl-tickets"].data[args.task].train
    stream = TaskStream(args.task, data, cfg.train.batch_size, cfg.train.seed)  # what every session's stream draws
    batches = [stream.next() for _ in range(args.warmup + args.steps)]
    runs = {name: ours_run(s, len(batches)) for name, s in sessions.items()}
    runs |= {name: trainer_run(cfg, batches, options, name) for name, options in TRAINERS.items()}

    first_call = {}  # burn-in: the compiled Trainer compiles here
    for name, run in runs.items():
        start = time.perf_counter()
        ends = run()
        first_call[name] = {"to_end_of_warmup_s": ends[args.warmup - 1] - start, "whole_call_s": ends[-1] - start}
    times = {name: [] for name in runs}
    peaks = {"fp32": [], "bf16": []}
    for _ in range(args.repeats):
        for name, run in runs.items():
            ends = run()
            times[name].append(ends[-1] - ends[args.warmup - 1])
        peaks["fp32"].append(matmul_peak(torch.float32))
        peaks["bf16"].append(matmul_peak(torch.bfloat16))
    print(write_result("train_throughput", summarize(args, cfg, batches, sessions, times, peaks, first_call)))
    if args.epochs:
        write_result("train_throughput_epochs", full_training(cfg, sessions["mtl-tickets"], args.epochs))


def summarize(args, cfg, batches, sessions, times, peaks, first_call) -> dict:
    timed = batches[args.warmup:]
    examples = sum(len(b["labels"]) for b in timed)
    real = sum(int(b["attention_mask"].sum()) for b in timed)
    padded = sum(b["attention_mask"].numel() for b in timed)
    flops = model_flops(sessions["mtl-tickets"].model.encoder, timed)
    peak = {k: statistics.median(v) for k, v in peaks.items()}
    rates = {}
    for name, t in times.items():
        s = statistics.median(t)
        rates[name] = {"examples_per_s": examples / s, "real_tokens_per_s": real / s, "padded_tokens_per_s": padded / s,
                       "achieved_flops": flops / s, "mfu_of_fp32_peak": flops / s / peak["fp32"],
                       "mfu_of_bf16_peak": flops / s / peak["bf16"], "seconds": spread(t)}
    speedups = {f"{a} vs {b}": statistics.median(times[b]) / statistics.median(times[a]) for a in OURS for b in TRAINERS}
    for line in (f"{n}: {r['examples_per_s']:.1f} ex/s, {r['real_tokens_per_s']:.0f} real tokens/s" for n, r in rates.items()):
        print(line)
    print("  ".join(f"{k} {v:.2f}x" for k, v in speedups.items()))
    print(f"matmul peak fp32 {peak['fp32'] / 1e9:.0f}, bf16 {peak['bf16'] / 1e9:.0f} GFLOP/s")
    return {"what": f"{args.steps} timed steps (after {args.warmup}) of batch {cfg.train.batch_size} on {args.task} "
                    f"(2,000 examples), the same batches for every contender",
            "baseline": "transformers Trainer with its defaults (fused AdamW, fp32), reading the same batches",
            "repeats": args.repeats, "timed_batches": {"examples": examples, "real_tokens": real, "padded_tokens": padded,
                                                      "model_flops": flops},
            "rates": rates, "speedups": speedups, "target": ">= 1.25x the Trainer",
            "matmul_peak_flops": {k: spread(v) for k, v in peaks.items()},
            "first_call": first_call,
            "note": "first_call: each contender's first call, from its start (data loader and optimizer set-up, "
                    "for hf-trainer-compile also compilation) to the end of the warm-up steps and of the call"}


def full_training(cfg, session: Session, epochs: float) -> dict:
    """mtl-tickets' recipe and the Trainer, each `epochs` epochs over the same batches; time and dev."""
    from mtl_tickets.train import train

    task = cfg.tasks[0]
    shutil.rmtree(cfg.output_dir, ignore_errors=True)  # a finished run would be reused, not trained
    start = time.perf_counter()
    result = train(cfg, progress=False)
    ours_s = time.perf_counter() - start
    stream = TaskStream(task, session.data[task].train, cfg.train.batch_size, cfg.train.seed)
    batches = [stream.next() for _ in range(result.results["steps"])]  # the batches the run trained on
    trainer, _ = build_trainer(cfg, adapted_model(cfg), batches, {}, "runs/bench-throughput-hf-trainer")
    start = time.perf_counter()
    trainer.train()
    hf_s = time.perf_counter() - start
    hf = evaluate(trainer.model.model, session.data[task], cfg.train.eval_batch_size)
    ours = result.results["last"]["tasks"][task]
    print(f"{epochs} epochs: mtl-tickets {ours_s:.0f} s, dev {ours}; Trainer {hf_s:.0f} s, dev {hf}")
    return {"what": f"{epochs} epochs on {task} (2,000 examples), the same batches", "epochs": epochs,
            "mtl-tickets": {"seconds": ours_s, "dev_last_epoch": ours},
            "hf-trainer": {"seconds": hf_s, "dev_last_epoch": hf},
            "note": "mtl-tickets' time includes its evaluation every epoch and checkpoints; the Trainer's has neither"}


if __name__ == "__main__":
    main()
