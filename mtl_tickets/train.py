"""The training recipe: fine-tune one shared encoder on one or several tasks, evaluate every epoch,
keep the best checkpoint, resume from the last one.

    result = train(load_config("configs/quickstart.yaml"))

Each step one task is drawn (`samplers.py`), one batch of it is trained through that task's gates
(`model.sharing`: its ticket under `sharing: tickets`, its learned ticket under `adaptive`), and units
masked for it are frozen for the step. Rerunning
the same command continues a killed run; `torchrun --nproc-per-node N` runs it data-parallel.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import platform
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from . import allocator, checkpoint, distributed, pruned_copy, registry, rundir, sliced
from .build import build_model, build_sharing, run_tickets, trainable_specs
from .config import Config, TrainConfig, save_config
from .data import TaskData, TaskStream, load_task
from .distributed import World
from .encoders import load_tokenizer
from .evaluation import evaluate
from .gates import EncoderShape
from .logger import JsonlLogger, Loggers, TensorBoardLogger
from .masks import TicketSet
from .metrics import glue_average, task_score
from .model import MultiTaskModel
from .optim import FrozenSlices, build_optimizer, build_scheduler
from .samplers import SamplerContext, TaskSampler, build_sampler
from .schema import to_dict
from .sharing import PARTS, AdaptiveSharing
from .validation import validate

log = logging.getLogger(__name__)


class TrainingInterrupted(RuntimeError):
    """SIGINT/SIGTERM arrived; a checkpoint was saved and the same command resumes."""


class NumericalError(RuntimeError):
    """The loss became NaN or infinite."""


@dataclass(frozen=True)
class Plan:
    """Step counts of a run: an epoch is one pass over every task's batches."""

    steps_per_epoch: int
    total_steps: int  # the schedule's length
    last_step: int  # where this invocation stops (max_steps may cut it short)
    eval_steps: frozenset[int]

    @classmethod
    def of(cls, batches_per_task: dict[str, int], cfg: Config) -> Plan:
        per_epoch = sum(batches_per_task.values())
        total = max(1, math.ceil(cfg.train.epochs * per_epoch))
        last = min(total, cfg.train.max_steps or total)
        every = per_epoch / cfg.train.evals_per_epoch
        evals = {min(total, round(every * k)) for k in range(1, math.ceil(total / every) + 1)} | {last}
        return cls(per_epoch, total, last, frozenset(s for s in evals if s <= last))


@dataclass(frozen=True)
class RunResult:
    output_dir: Path
    results: dict  # the content of results.json


@dataclass
class Session:
    """Everything one run trains with, built once and restored from its last checkpoint."""

    cfg: Config
    world: World
    out: Path
    data: dict[str, TaskData]
    model: MultiTaskModel
    streams: dict[str, TaskStream]
    plan: Plan
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    sampler: TaskSampler
    state: checkpoint.TrainState
    loggers: Loggers
    copy: pruned_copy.WorkingCopy | None  # a single-task ticket run's pruned encoder (pruned_copy.py)

    def full_shape(self) -> contextlib.AbstractContextManager:
        """Model and optimizer as full-size ones, to save them (a no-op without a working copy)."""
        return pruned_copy.full_shape(self.copy, self.optimizer)


def train(cfg: Config, progress: bool = True) -> RunResult:
    """Fine-tune, evaluating on each task's dev sets; a finished run in the directory is returned as is,
    a run directory another process is training in is refused (rank 0 holds its lock)."""
    validate(cfg)
    world = distributed.init()
    out = rundir.prepare(cfg)
    finished = rundir.finished_results(out)
    if finished is not None:
        return RunResult(out, finished)
    lock = rundir.RunLock(out) if world.is_main else contextlib.nullcontext()
    with lock, allocator.kept_while_running(cfg.train.keep_freed_memory):
        if world.is_main:
            save_config(cfg, out / "config.yaml")  # under the lock: a refused process leaves the live run's as it is
        return train_to_the_end(cfg, world, out, progress)


def train_to_the_end(cfg: Config, world: World, out: Path, progress: bool) -> RunResult:
    """From the last checkpoint (or the start) to the end of the plan; results.json when it is reached."""
    s = start_session(cfg, world, out)
    names = list(s.streams)
    started = time.perf_counter() - s.state.seconds  # this session's clock, counting the earlier sessions' time
    bar = tqdm(total=s.plan.last_step, initial=s.state.step, disable=not (progress and world.is_main), dynamic_ncols=True)
    with StopOnSignal() as stop, bar:
        while s.state.step < s.plan.last_step:
            index = s.sampler.choose(s.state.step, cfg.train.seed)
            loss = train_step(s, names[index])
            s.sampler.observe(index, loss)
            record_step(s, names[index], loss)
            bar.update(1)
            bar.set_description(f"step {s.state.step}|{names[index]}|loss {loss:.3f}")
            if s.state.step in s.plan.eval_steps:
                evaluate_and_keep_best(s)
            stopping = distributed.any_rank(stop.requested, world)
            s.state.seconds = time.perf_counter() - started
            if s.state.step % cfg.train.checkpoint_every == 0 or s.state.step in s.plan.eval_steps or stopping:
                save_checkpoint(s)
            if stopping:
                s.loggers.close()
                raise TrainingInterrupted(f"interrupted at step {s.state.step}; checkpoint saved in {out}")
        s.loggers.close()
        results = summarize(s)
        if world.is_main:
            write_results(cfg, s, out, results)
        if distributed.any_rank(stop.requested, world):  # arrived after the last step's check: the run is
            # finished and kept, but a command with more runs to go (sweep, compare) must not start the next
            raise TrainingInterrupted(f"stopped after finishing the run in {out}")
    return RunResult(out, results)


def write_results(cfg: Config, s: Session, out: Path, results: dict) -> None:
    """results.json (and an adaptive run's learned tickets) marks the run finished; its checkpoints go."""
    if isinstance(s.model.sharing, AdaptiveSharing):
        TicketSet(cfg.model.name, EncoderShape.of(s.model.encoder), s.model.sharing.tickets()).save(out / "learned_tickets.json")
    checkpoint.atomic_write_text(out / "results.json", json.dumps(results, indent=2))
    if results["complete"] and not cfg.train.keep_checkpoints:
        shutil.rmtree(out / "checkpoints", ignore_errors=True)  # finished: reused from here on, never resumed


def start_session(cfg: Config, world: World, out: Path) -> Session:
    """Data, model, tickets, optimizer and scheduler; then the last checkpoint, if any, on top."""
    specs = trainable_specs(cfg)
    tokenizer = load_tokenizer(cfg.model.name)
    data = {s.name: load_task(s, tokenizer, cfg.data) for s in specs}
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg, specs, world.device)
    if cfg.train.compile:
        model.compile()  # in place: the same module, parameters and state-dict names
    if world.is_main:
        checkpoint.check_free_space(out, model)
    build_sharing(cfg, model, run_tickets(cfg, model, out if world.is_main else None))
    copy = pruned_copy.for_run(model, cfg)  # before the optimizer, which then steps only what the ticket keeps
    streams = {name: TaskStream(name, d.train, cfg.train.batch_size, cfg.train.seed, pad_to_multiple_of=cfg.data.pad_to_multiple_of)
               for name, d in data.items()}
    names = list(streams)
    plan = Plan.of({name: len(s) for name, s in streams.items()}, cfg)
    optimizer = build_optimizer(model, cfg.train, gate_lr=cfg.adaptive.lr)
    scheduler = build_scheduler(optimizer, plan.total_steps, cfg.train.warmup)
    context = SamplerContext(names, [len(streams[n]) for n in names], cfg.train.epochs)
    sampler = build_sampler(cfg.train.sampler, context, cfg.train.sampler_options)
    with pruned_copy.full_shape(copy, optimizer):
        state = resume_or_start(out, model, optimizer, scheduler, streams, sampler)
    loggers = Loggers(TensorBoardLogger(out / "tensorboard"), JsonlLogger(out / "metrics.jsonl")) if world.is_main else Loggers()
    return Session(cfg, world, out, data, model, streams, plan, optimizer, scheduler, sampler, state, loggers, copy)


def train_step(s: Session, task: str) -> float:
    """One optimizer step on one batch of `task` (this rank's shard of it); the mean loss over ranks.

    A NaN or infinite loss or gradient stops the run (`train.on_nonfinite: stop`) or skips the
    update (`skip`); either way nothing non-finite reaches the weights or a checkpoint."""
    s.model.train()
    batch = {k: v.to(s.world.device) for k, v in s.streams[task].next(s.world).items()}
    sharing, encoder = s.model.sharing, s.model.encoder
    learn = sharing.learns_at(s.state.step, s.plan.total_steps)
    with sliced.through(encoder, sharing.train_gates(encoder, task, learn)), bf16_autocast(s.cfg.train, s.world.device):
        loss = s.model.loss(s.model(batch, task), batch["labels"], task)
    penalty = sharing.penalty(task) if learn else None
    if penalty is not None:
        loss = loss + penalty
    frozen = sharing.frozen(encoder, task) if s.cfg.train.masked_updates == "freeze" else []
    value = distributed.mean(loss.item(), s.world)
    if math.isfinite(value):
        loss.backward()
        distributed.average_gradients(s.model, s.world)
        norm = torch.nn.utils.clip_grad_norm_(s.model.parameters(), s.cfg.train.max_grad_norm or float("inf"))
        if math.isfinite(norm):
            with FrozenSlices(s.optimizer, frozen):
                s.optimizer.step()
        else:
            value = float("nan")
    s.optimizer.zero_grad(set_to_none=True)
    if not math.isfinite(value):
        handle_nonfinite(s, task, loss.item())
    s.scheduler.step()
    return value


def bf16_autocast(cfg: TrainConfig, device: torch.device) -> torch.autocast:
    """bf16 autocast where it pays: on a GPU (`train.bf16`), or on a CPU with native bf16 instructions
    (`train.cpu_bf16`); a CPU without them emulates bf16, slower than fp32, and keeps fp32."""
    return torch.autocast("cuda" if device.type == "cuda" else "cpu", torch.bfloat16, enabled=uses_bf16(cfg, device))


def uses_bf16(cfg: TrainConfig, device: torch.device) -> bool:
    """Whether `bf16_autocast` turns autocast on; results.json records it, as a setting alone cannot say."""
    if device.type == "cuda":
        return cfg.bf16
    native = device.type == "cpu" and (torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    return cfg.cpu_bf16 and native


def handle_nonfinite(s: Session, task: str, loss: float) -> None:
    where = f"on task {task!r} at step {s.state.step + 1}"
    if s.cfg.train.on_nonfinite == "stop":
        raise NumericalError(
            f"non-finite loss or gradient ({loss}) {where}; the weights were not updated and the last good "
            f"checkpoint in {s.out / 'checkpoints'} is kept; try a lower learning rate or train.on_nonfinite=skip"
        )
    s.state.skipped_steps.append({"step": s.state.step + 1, "task": task})
    log.warning("skipped the update %s: non-finite loss or gradient (%s)", where, loss)


def record_step(s: Session, task: str, loss: float) -> None:
    s.state.step += 1
    s.state.task_steps[task] = s.state.task_steps.get(task, 0) + 1
    if s.state.step % s.cfg.train.log_every == 0:
        s.loggers.log_dict({f"train/{task}/loss": loss, "train/lr": s.scheduler.get_last_lr()[0]}, s.state.step)


def evaluate_and_keep_best(s: Session) -> None:
    """Evaluate every task through its own gates; keep the weights when the GLUE average improves."""
    state = s.state
    tasks = {name: evaluate(s.model, d, s.cfg.train.eval_batch_size) for name, d in s.data.items()}
    score = glue_average(tasks)
    record = {"step": state.step, "epoch": round(state.step / s.plan.steps_per_epoch, 4), "glue_average": score, "tasks": tasks}
    state.history.append(record)
    payload = {f"eval/{t}/{split}/{m}" if len(r) > 1 else f"eval/{t}/{m}": v
               for t, r in tasks.items() for split, ms in r.items() for m, v in ms.items()}
    mix = {f"train/mix/{t}": n / state.step for t, n in state.task_steps.items()}
    s.loggers.log_dict({**payload, **mix, "eval/glue_average": score}, state.step)
    if isinstance(s.model.sharing, AdaptiveSharing):
        record["sharing"] = log_sharing(s.model.sharing, s.loggers, state.step)
    if s.world.is_main:
        summary = "  ".join(f"{t} {task_score(r):.2f}" for t, r in tasks.items())
        log.info("eval step %d epoch %.2f: %s | average %.2f", state.step, record["epoch"], summary, score)
    if state.best_score is None or score > state.best_score:
        state.best_score, state.best_step = score, state.step
        if s.world.is_main and s.cfg.train.save_best:
            (s.out / "best").mkdir(exist_ok=True)
            with s.full_shape():
                checkpoint.save_weights(s.model, s.out / "best" / "model.safetensors")
            checkpoint.atomic_write_text(s.out / "best" / "eval.json", json.dumps(record, indent=2))


def log_sharing(sharing: AdaptiveSharing, loggers: Loggers, step: int) -> dict:
    """What the adaptive module has learned so far: per task and unit type the units gained, dropped
    and taken from other tasks' tickets, density, Jaccard to the super ticket and the share of units
    near the decision boundary; the task x task overlap of the learned masks and its change."""
    from .board import heatmap_figure, ticket_map_figure

    report = sharing.report()
    names = report["tasks"]
    scalars = {f"sharing/{t}/{part}/{k}": v for t, parts in report["per_task"].items() for part, d in parts.items() for k, v in d.items()}
    for i, a in enumerate(names):
        for j, b in enumerate(names):
            if i < j:
                for part in PARTS:
                    scalars[f"sharing/jaccard_{part}/{a}-{b}"] = report["jaccard"][part][i][j]
    loggers.log_dict(scalars, step)
    for part, label in (("attn_heads", "heads"), ("ffn", "FFN units")):
        figures = {
            f"sharing/overlap_{part}": heatmap_figure(report["jaccard"][part], names, f"Jaccard of learned {label}"),
            f"sharing/overlap_change_{part}": heatmap_figure(report["jaccard_change"][part], names,
                                                             f"Jaccard change since the super tickets ({label})", signed=True),
            f"sharing/taken_{part}": heatmap_figure(report["taken"][part], names, f"{label} the row task took from the column's ticket",
                                                    vmax=None),
        }
        for tag, figure in figures.items():
            loggers.log_figure(tag, figure, step)
    for name, ticket in sharing.tickets().items():
        loggers.log_figure(f"sharing/{name}/ticket", ticket_map_figure(ticket, name), step)
        for part in PARTS:
            scores = getattr(sharing.scores[name], part).detach().flatten().cpu()
            loggers.log_histogram(f"sharing/{name}/{part}_score", scores, step)
    return report


def save_checkpoint(s: Session) -> None:
    s.state.cursors = {name: list(stream.cursor) for name, stream in s.streams.items()}
    s.state.sampler = s.sampler.state_dict()
    if s.world.is_main:
        with s.full_shape():
            checkpoint.save(s.out / "checkpoints", s.model, s.optimizer, s.scheduler, s.state)


def resume_or_start(out: Path, model, optimizer, scheduler, streams: dict[str, TaskStream], sampler) -> checkpoint.TrainState:
    found = checkpoint.restore_newest(out / "checkpoints", model, optimizer, scheduler)
    if found is None:
        return checkpoint.TrainState()
    path, state = found
    rundir.drop_metrics_after(out / "metrics.jsonl", state.step)  # steps after the checkpoint are replayed
    for name, stream in streams.items():
        stream.seek(state.cursors[name])
    if state.sampler:
        sampler.load_state_dict(state.sampler)
    log.info("resumed from %s at step %d", path, state.step)
    return state


def summarize(s: Session) -> dict:
    """results.json: the best evaluation (by GLUE average), the last, and each task's own best."""
    state = s.state
    best = next(r for r in state.history if r["step"] == state.best_step)
    per_task_best = {}
    for name in s.data:
        top = max(state.history, key=lambda r: task_score(r["tasks"][name]))
        per_task_best[name] = {"step": top["step"], "epoch": top["epoch"], "metrics": top["tasks"][name]}
    return {
        "tasks": list(s.data),
        "best": best,
        "last": state.history[-1],
        "history": state.history,
        "per_task_best": per_task_best,
        "train_examples": {n: len(d.train) for n, d in s.data.items()},
        "dev_examples": {n: {split: len(e) for split, e in d.dev.items()} for n, d in s.data.items()},
        "steps": state.step,
        "task_steps": state.task_steps,
        "skipped_steps": state.skipped_steps,
        "complete": state.step == s.plan.total_steps,
        "steps_per_epoch": s.plan.steps_per_epoch,
        "seconds": round(state.seconds, 1),  # the training loop's wall time, resumed sessions included
        "world_size": s.world.size,
        "sharing": s.model.sharing.report(),
        "config": to_dict(s.cfg),
        "versions": versions(s.world.device),
        "precision": "bf16-autocast" if uses_bf16(s.cfg.train, s.world.device) else "fp32",  # of the training steps
    }


def format_results(results: dict) -> str:
    """results.json as a table: each task's dev metrics at the best evaluation and the last, then the
    task average, called the GLUE average only when every task is a GLUE task (as compare's table)."""
    best, last = results["best"], results["last"]
    average = "GLUE average" if registry.all_glue(results["tasks"]) else "average"
    lines = [f"{'task':8} {'split':22} {'metric':10} {'best':>8} {'last':>8}"]
    for task, splits in best["tasks"].items():
        for split, metrics in splits.items():
            for metric, value in metrics.items():
                lines.append(f"{task:8} {split:22} {metric:10} {value:8.2f} {last['tasks'][task][split][metric]:8.2f}")
    lines.append(f"{average}: best {best['glue_average']:.2f} (epoch {best['epoch']}), last {last['glue_average']:.2f}")
    return "\n".join(lines)


def versions(device: torch.device) -> dict[str, str]:
    import transformers

    return {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "threads": str(torch.get_num_threads()),
        "device": str(device),
    }


class StopOnSignal:
    """SIGINT/SIGTERM set a flag; the loop saves a checkpoint at the end of the step and stops."""

    def __init__(self):
        self.requested = False
        self._old: dict[int, object] = {}

    def __enter__(self) -> StopOnSignal:
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: signals stay as they are
                pass
        return self

    def _handle(self, signum, frame) -> None:
        self.requested = True

    def __exit__(self, *exc) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)
