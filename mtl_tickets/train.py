"""The training recipe: fine-tune one shared encoder on one or several tasks, evaluate every epoch,
keep the best checkpoint, resume from the last one.

    result = train(load_config("configs/quickstart.yaml"))

A run directory holds the resolved config, `metrics.jsonl`, TensorBoard events, `results.json`,
`best/` weights and resumable `checkpoints/`. Rerunning the same command continues a killed run.
"""

from __future__ import annotations

import json
import logging
import math
import platform
import signal
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from . import checkpoint, registry
from . import gates as gating
from .config import Config, save_config
from .data import TaskData, TaskStream, load_task
from .encoders import load_encoder, load_tokenizer
from .gates import EncoderShape
from .masks import Ticket, TicketSet
from .evaluation import evaluate
from .logger import JsonlLogger, Loggers, TensorBoardLogger
from .metrics import glue_average, task_score
from .model import MultiTaskModel
from .optim import FrozenSlices, build_optimizer, build_scheduler
from .pruning import owned_slices
from .samplers import SamplerContext, build_sampler
from .schema import ConfigError, load_yaml, to_dict

log = logging.getLogger(__name__)
RESUME_NEUTRAL = {("train", "max_steps"), ("train", "log_every")}  # may change between resumes


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


def train(cfg: Config, progress: bool = True) -> RunResult:
    """Fine-tune, evaluating on each task's dev sets. With `sharing: tickets` every task trains and
    is evaluated through its own ticket. A finished run in the same directory is returned as it is."""
    out = prepare_output_dir(cfg)
    finished = _finished_results(out)
    if finished is not None:
        return RunResult(out, finished)
    specs = [s for s in registry.resolve(cfg.tasks) if s.trainable]
    tokenizer = load_tokenizer(cfg.model.name)
    data = {s.name: load_task(s, tokenizer, cfg.data) for s in specs}
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg, specs)
    tickets = run_tickets(cfg, model, out)
    task_gates = {name: t.gates() for name, t in tickets.items()}
    streams = {name: TaskStream(name, d.train, cfg.train.batch_size, cfg.train.seed) for name, d in data.items()}
    plan = Plan.of({name: len(s) for name, s in streams.items()}, cfg)
    optimizer = build_optimizer(model, cfg.train)
    scheduler = build_scheduler(optimizer, plan.total_steps, cfg.train.warmup)
    frozen = frozen_slices(model, tickets) if cfg.train.masked_updates == "freeze" else {}
    state = resume_or_start(out, model, optimizer, scheduler, streams)
    names = list(streams)
    sampler = build_sampler(cfg.train.sampler, SamplerContext(names, [len(streams[n]) for n in names], cfg.train.epochs),
                            cfg.train.sampler_options)
    if state.sampler:
        sampler.load_state_dict(state.sampler)
    loggers = Loggers(TensorBoardLogger(out / "tensorboard"), JsonlLogger(out / "metrics.jsonl"))
    bar = tqdm(total=plan.last_step, initial=state.step, disable=not progress, desc="train", dynamic_ncols=True)
    with StopOnSignal() as stop, bar:
        while state.step < plan.last_step:
            index = sampler.choose(state.step, cfg.train.seed)
            task = names[index]
            with FrozenSlices(optimizer, frozen.get(task, [])):
                loss = train_step(model, optimizer, scheduler, streams[task].next(), task, task_gates.get(task), cfg)
            check_finite(loss, task, state.step + 1, out)
            sampler.observe(index, loss)
            state.step += 1
            state.task_steps[task] = state.task_steps.get(task, 0) + 1
            bar.update(1)
            bar.set_description(f"step {state.step}|{task}|loss {loss:.3f}")
            if state.step % cfg.train.log_every == 0:
                loggers.log_dict({f"train/{task}/loss": loss, "train/lr": scheduler.get_last_lr()[0]}, state.step)
            if state.step in plan.eval_steps:
                evaluate_and_keep_best(model, data, task_gates, state, plan, cfg, out, loggers)
            if state.step % cfg.train.checkpoint_every == 0 or state.step in plan.eval_steps or stop.requested:
                state.sampler = sampler.state_dict()
                save_checkpoint(out, model, optimizer, scheduler, state, streams)
            if stop.requested:
                loggers.close()
                raise TrainingInterrupted(f"interrupted at step {state.step}; checkpoint saved in {out}")
    loggers.close()
    results = summarize(cfg, state, plan, data)
    checkpoint.atomic_write_text(out / "results.json", json.dumps(results, indent=2))
    return RunResult(out, results)


def _finished_results(out: Path) -> dict | None:
    """The results of a run that went through its whole schedule (not one cut short by max_steps)."""
    try:
        results = json.loads((out / "results.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return results if results.get("complete") else None


def build_model(cfg: Config, specs: list[registry.TaskSpec]) -> MultiTaskModel:
    """The pre-trained encoder and freshly initialised task heads (the same for the same seed)."""
    model = MultiTaskModel(load_encoder(cfg.model.name), specs, cfg.model.pooling, cfg.model.head_dropout)
    model.reset_task_heads(cfg.train.seed)
    return model.to(device())


def run_tickets(cfg: Config, model: MultiTaskModel, out: Path) -> dict[str, Ticket]:
    """Each task's ticket under `sharing: tickets` (checked against the encoder; a copy kept in the run)."""
    if cfg.sharing != "tickets":
        return {}
    ticket_set = TicketSet.load(Path(cfg.tickets_file), expect=EncoderShape.of(model.encoder))
    missing = [name for name in model.specs if name not in ticket_set.tickets]
    if missing:
        raise ConfigError(f"{cfg.tickets_file} has no ticket for {missing}; it has {sorted(ticket_set.tickets)}")
    if Path(cfg.tickets_file).resolve() != (out / "tickets.json").resolve():
        ticket_set.save(out / "tickets.json")
    return {name: ticket_set.tickets[name] for name in model.specs}


def frozen_slices(model: MultiTaskModel, tickets: dict[str, Ticket]) -> dict[str, list]:
    """Per task, the (parameter, dim, index) slices its masked units own, for `FrozenSlices`."""
    out = {}
    for name, t in tickets.items():
        slices = owned_slices(model.encoder, t.attn_heads, t.ffn)
        out[name] = [(model.encoder.get_parameter(p), dim, torch.as_tensor(index, device=device())) for p, dim, index in slices]
    return out


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def train_step(model, optimizer, scheduler, batch, task: str, gates: gating.Gates | None, cfg: Config) -> float:
    model.train()
    batch = {k: v.to(device()) for k, v in batch.items()}
    with gating.applied(model.encoder, gates):
        outputs = model(batch, task)
    loss = model.loss(outputs, batch["labels"], task)
    loss.backward()
    if cfg.train.max_grad_norm:
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.max_grad_norm)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.item()


def check_finite(loss: float, task: str, step: int, out: Path) -> None:
    if not math.isfinite(loss):
        raise NumericalError(
            f"loss is {loss} on task {task!r} at step {step}; nothing was saved after it "
            f"(last good checkpoint in {out / 'checkpoints'}); try a lower learning rate"
        )


def evaluate_and_keep_best(model, data: dict[str, TaskData], task_gates, state, plan: Plan, cfg: Config, out: Path, loggers) -> None:
    """Evaluate every task through its own gates; save the weights when the GLUE average improves."""
    tasks = {name: evaluate(model, d, cfg.train.eval_batch_size, task_gates.get(name)) for name, d in data.items()}
    score = glue_average(tasks)
    record = {"step": state.step, "epoch": round(state.step / plan.steps_per_epoch, 4), "glue_average": score, "tasks": tasks}
    state.history.append(record)
    payload = {f"eval/{t}/{s}/{m}" if len(r) > 1 else f"eval/{t}/{m}": v for t, r in tasks.items() for s, ms in r.items() for m, v in ms.items()}
    mix = {f"train/mix/{t}": n / state.step for t, n in state.task_steps.items()}
    loggers.log_dict({**payload, **mix, "eval/glue_average": score}, state.step)
    summary = "  ".join(f"{t} {task_score(r):.2f}" for t, r in tasks.items())
    log.info("eval step %d epoch %.2f: %s | average %.2f", state.step, record["epoch"], summary, score)
    if state.best_score is None or score > state.best_score:
        state.best_score, state.best_step = score, state.step
        (out / "best").mkdir(exist_ok=True)
        checkpoint.save_weights(model, out / "best" / "model.safetensors")
        checkpoint.atomic_write_text(out / "best" / "eval.json", json.dumps(record, indent=2))


def save_checkpoint(out: Path, model, optimizer, scheduler, state, streams: dict[str, TaskStream]) -> None:
    state.cursors = {name: list(s.cursor) for name, s in streams.items()}
    checkpoint.save(out / "checkpoints", model, optimizer, scheduler, state)


def resume_or_start(out: Path, model, optimizer, scheduler, streams: dict[str, TaskStream]) -> checkpoint.TrainState:
    path = checkpoint.latest(out / "checkpoints")
    if path is None:
        return checkpoint.TrainState()
    state = checkpoint.restore(path, model, optimizer, scheduler)
    _drop_metrics_after(out / "metrics.jsonl", state.step)  # steps after the checkpoint are replayed
    for name, cursor in state.cursors.items():
        streams[name] = TaskStream(name, streams[name].data, streams[name].batch_size, streams[name].seed, cursor)
    log.info("resumed from %s at step %d", path, state.step)
    return state


def _drop_metrics_after(path: Path, step: int) -> None:
    if path.is_file():
        lines = path.read_text(encoding="utf-8").splitlines()
        kept = [line for line in lines if line.strip() and json.loads(line)["step"] <= step]
        checkpoint.atomic_write_text(path, "".join(line + "\n" for line in kept))


def prepare_output_dir(cfg: Config) -> Path:
    """Create (or re-open) the run directory; a different config there is refused, not overwritten."""
    out = Path(cfg.output_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        raise ConfigError(f"output dir {out} is not writable ({err.strerror}); choose another --output-dir") from None
    saved = out / "config.yaml"
    if saved.is_file():
        differences = _config_differences(load_yaml(saved) or {}, to_dict(cfg))
        if differences:
            raise ConfigError(
                f"{out} holds a run with another config ({'; '.join(differences[:3])}); "
                "rerun with the same settings to resume it, or choose a new --output-dir"
            )
    save_config(cfg, saved)
    return out


def _config_differences(old: dict, new: dict, prefix: tuple = ()) -> list[str]:
    found = []
    for key in sorted(set(old) | set(new)):
        path = (*prefix, key)
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            found += _config_differences(a, b, path)
        elif a != b and path not in RESUME_NEUTRAL:
            found.append(f"{'.'.join(path)}: {a!r} -> {b!r}")
    return found


def summarize(cfg: Config, state: checkpoint.TrainState, plan: Plan, data: dict[str, TaskData]) -> dict:
    """results.json: the best evaluation (by GLUE average), the last, and each task's own best."""
    best = next(r for r in state.history if r["step"] == state.best_step)
    per_task_best = {}
    for name in data:
        top = max(state.history, key=lambda r: task_score(r["tasks"][name]))
        per_task_best[name] = {"step": top["step"], "epoch": top["epoch"], "metrics": top["tasks"][name]}
    return {
        "tasks": list(data),
        "best": best,
        "last": state.history[-1],
        "history": state.history,
        "per_task_best": per_task_best,
        "train_examples": {n: len(d.train) for n, d in data.items()},
        "dev_examples": {n: {s: len(e) for s, e in d.dev.items()} for n, d in data.items()},
        "steps": state.step,
        "task_steps": state.task_steps,
        "complete": state.step == plan.total_steps,
        "steps_per_epoch": plan.steps_per_epoch,
        "config": to_dict(cfg),
        "versions": versions(),
    }


def versions() -> dict[str, str]:
    import transformers

    return {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "threads": str(torch.get_num_threads()),
        "device": str(device()),
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
