"""Training throughput of mtl-tickets against the Hugging Face `Trainer` on the same encoder, data,
batch size and sequence lengths, and model FLOPs utilisation against this machine's measured fp32
matrix-multiply peak (protocol speed v1). Target: at least 1.25x the Trainer.

Both train the same model (the default encoder with a mean-pooling task head, as `mtl-tickets
train` builds it) on one task (mini-GLUE v1 subsample of 2,000; RTE by default); the Trainer gets its fair settings:
dynamic padding (DataCollatorWithPadding) and length grouping. Runs alternate, `--steps` each.
With `--epochs E` both then train E full epochs and report the dev accuracy they reach.

    python benchmarks/train_throughput.py --glue-dir ../shared/data/glue [--task mrpc] [--steps 30 --repeats 3] [--epochs 3]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from torch import nn

from common import write_result
from mtl_tickets import registry
from mtl_tickets.config import load_config
from mtl_tickets.data import Encoded
from mtl_tickets.evaluation import evaluate
from mtl_tickets.build import build_model
from mtl_tickets.train import start_session, train_step
from mtl_tickets.distributed import World


class TrainerAdapter(nn.Module):
    """Our model behind the Trainer's calling convention (keyword tensors in, loss and logits out)."""

    def __init__(self, model, task: str):
        super().__init__()
        self.model, self.task = model, task

    def forward(self, input_ids, attention_mask, token_type_ids=None, labels=None):
        batch = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
        logits = self.model(batch, self.task)
        return {"loss": self.model.loss(logits, labels, self.task), "logits": logits}


def hf_dataset(data: Encoded):
    import datasets

    rows = {"input_ids": [], "token_type_ids": [], "labels": data.labels.tolist()}
    for i in range(len(data)):
        a, b = data.offsets[i], data.offsets[i + 1]
        rows["input_ids"].append(data.ids[a:b].tolist())
        rows["token_type_ids"].append(data.types[a:b].tolist())
    return datasets.Dataset.from_dict(rows)


def trainer_for(cfg, model, train_set, max_steps: int, epochs: float, out: str):
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    from mtl_tickets.encoders import load_tokenizer

    args = TrainingArguments(
        output_dir=out, per_device_train_batch_size=cfg.train.batch_size, learning_rate=cfg.train.lr,
        weight_decay=cfg.train.weight_decay, warmup_steps=cfg.train.warmup, max_grad_norm=cfg.train.max_grad_norm,
        num_train_epochs=epochs, max_steps=max_steps, train_sampling_strategy="group_by_length",
        report_to=[], save_strategy="no", logging_strategy="no", eval_strategy="no", use_cpu=not torch.cuda.is_available(),
        dataloader_num_workers=0, seed=cfg.train.seed, disable_tqdm=True)
    return Trainer(model=TrainerAdapter(model, cfg.tasks[0]), args=args, train_dataset=train_set,
                   data_collator=DataCollatorWithPadding(load_tokenizer(cfg.model.name)))


def matmul_peak(n: int = 1536, repeats: int = 10) -> float:
    """fp32 FLOP/s of a square matrix multiply (best of repeats)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * n**3 / best


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--glue-dir", required=True)
    parser.add_argument("--task", default="rte", help="a classification task of mini-GLUE v1 (2,000 train examples)")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=float, default=0, help="also train this many full epochs with each and compare dev")
    args = parser.parse_args()
    task = args.task
    cfg = load_config(None, [f"data.glue_dir={args.glue_dir}", "data.max_train_examples=2000", f"tasks=[{task}]",
                             f"output_dir=runs/bench-throughput-{task}", f"train.epochs={max(args.epochs, 1)}"])
    scratch = Path("runs/bench-throughput-ours")
    scratch.mkdir(parents=True, exist_ok=True)
    session = start_session(cfg, World(), scratch)
    data = session.data[task]
    train_set = hf_dataset(data.train)
    tokens_per_example = float(data.train.lengths.mean())

    def ours() -> float:
        start = time.perf_counter()
        for _ in range(args.steps):
            train_step(session, task)
        return time.perf_counter() - start

    def hf() -> float:
        torch.manual_seed(cfg.train.seed)
        trainer = trainer_for(cfg, build_model(cfg, registry.resolve([task])), train_set, args.steps, 1, "runs/bench-throughput-hf")
        start = time.perf_counter()
        trainer.train()
        return time.perf_counter() - start

    ours(), hf()  # burn-in
    times = {"mtl-tickets": [], "hf-trainer": []}
    for _ in range(args.repeats):
        times["mtl-tickets"].append(ours())
        times["hf-trainer"].append(hf())
    examples = args.steps * cfg.train.batch_size
    rate = {k: {"examples_per_s": examples / statistics.median(v), "tokens_per_s": examples * tokens_per_example / statistics.median(v),
                "seconds": {"min": min(v), "median": statistics.median(v), "max": max(v)}} for k, v in times.items()}
    ratio = rate["mtl-tickets"]["examples_per_s"] / rate["hf-trainer"]["examples_per_s"]
    encoder = session.model.encoder
    layer_params = sum(p.numel() for p in encoder.encoder.parameters())
    c = encoder.config
    flops_per_token = 6 * layer_params + 12 * c.num_hidden_layers * tokens_per_example * c.hidden_size  # fwd+bwd
    peak = matmul_peak()
    what = f"{args.steps} training steps of batch {cfg.train.batch_size} on {task} (2,000, mean {tokens_per_example:.1f} tokens)"
    result = {"what": what,
              "baseline": "transformers Trainer, dynamic padding + group_by_length, same model", "repeats": args.repeats,
              "rates": rate, "speedup_vs_trainer": ratio, "target": ">= 1.25x the Trainer",
              "mfu": {"matmul_peak_flops": peak, "model_flops_per_token": flops_per_token,
                      "achieved_flops": flops_per_token * rate["mtl-tickets"]["tokens_per_s"],
                      "mfu": flops_per_token * rate["mtl-tickets"]["tokens_per_s"] / peak}}
    print(f"mtl-tickets {rate['mtl-tickets']['examples_per_s']:.1f} ex/s, Trainer {rate['hf-trainer']['examples_per_s']:.1f} ex/s: "
          f"{ratio:.2f}x; MFU {result['mfu']['mfu']:.1%} of {peak / 1e9:.0f} GFLOP/s")
    if args.epochs:
        result["full_training"] = full_training(cfg, session, train_set, args.epochs)
    print(write_result("train_throughput", result))


def full_training(cfg, session, train_set, epochs: float) -> dict:
    """Both trained `epochs` epochs from the same start; time and final dev metrics."""
    from mtl_tickets.train import train

    task = cfg.tasks[0]
    start = time.perf_counter()
    ours = train(cfg, progress=False).results["last"]["tasks"][task]["dev"]
    ours_s = time.perf_counter() - start
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg, registry.resolve([task]))
    trainer = trainer_for(cfg, model, train_set, -1, epochs, "runs/bench-throughput-hf")
    start = time.perf_counter()
    trainer.train()
    hf_s = time.perf_counter() - start
    hf = evaluate(model, session.data[task], cfg.train.eval_batch_size)["dev"]
    print(f"{epochs} epochs: mtl-tickets {ours_s:.0f} s, dev {ours}; Trainer {hf_s:.0f} s, dev {hf}")
    return {"epochs": epochs, "mtl-tickets": {"seconds": ours_s, "dev_last_epoch": ours},
            "hf-trainer": {"seconds": hf_s, "dev_last_epoch": hf},
            "note": "mtl-tickets' time includes its evaluation every epoch and checkpoints; the Trainer's has neither"}


if __name__ == "__main__":
    main()
