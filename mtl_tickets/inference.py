"""Re-open a finished run: evaluate its weights on the dev sets, or write GLUE test predictions."""

from __future__ import annotations

from pathlib import Path

from . import checkpoint, registry
from .config import Config, load_config
from .data import load_task
from .encoders import load_tokenizer
from .evaluation import evaluate, predict, write_submission
from .gates import EncoderShape, Gates
from .masks import TicketSet
from .model import MultiTaskModel
from .schema import ConfigError
from .sharing import SharingModule
from .sliced import SlicedTicket, fixed


def load_run(run_dir: Path, glue_dir: str | None = None, weights: str = "best") -> tuple[Config, MultiTaskModel]:
    """The run's resolved config and its model with the chosen weights loaded."""
    from .train import build_model

    if not (run_dir / "config.yaml").is_file():
        raise ConfigError(f"{run_dir} is not a run directory (no config.yaml); give the --output-dir of a train run")
    overrides = [f"data.glue_dir={glue_dir}"] if glue_dir else []
    cfg = load_config(run_dir / "config.yaml", overrides)
    specs = [s for s in registry.resolve(cfg.tasks) if s.trainable]
    model = build_model(cfg, specs)
    if cfg.sharing == "adaptive":
        tickets = TicketSet.load(run_dir / "tickets.json", expect=EncoderShape.of(model.encoder)).tickets
        start = {n: tickets[n] for n in model.specs}
        model.add_module("sharing", SharingModule.from_config(start, cfg.adaptive).to(next(model.parameters()).device))
    if weights == "best":
        path = run_dir / "best" / "model.safetensors"
    else:
        last = checkpoint.latest(run_dir / "checkpoints")
        path = last / "model.safetensors" if last else run_dir / "missing"
    if not path.is_file():
        raise ConfigError(f"{run_dir} has no {weights} weights yet ({path}); train it first")
    checkpoint.load_weights(model, path)
    return cfg, model.eval()


def run_gates(cfg: Config, model: MultiTaskModel, run_dir: Path) -> dict[str, Gates | SlicedTicket]:
    """How a run evaluates each task: through its ticket (sliced unless `train.sliced` is off), or the
    adaptive module's hard gates; nothing for `full`."""
    if cfg.sharing == "adaptive":
        return {name: model.sharing.hard_gates(name) for name in model.specs}
    if cfg.sharing != "tickets":
        return {}
    tickets = TicketSet.load(run_dir / "tickets.json", expect=EncoderShape.of(model.encoder)).tickets
    return {name: fixed(model.encoder, tickets[name], cfg.train.sliced) for name in model.specs}


def evaluate_run(run_dir: Path, glue_dir: str | None = None, weights: str = "best") -> dict:
    cfg, model = load_run(run_dir, glue_dir, weights)
    tokenizer = load_tokenizer(cfg.model.name)
    gates = run_gates(cfg, model, run_dir)
    return {
        name: evaluate(model, load_task(spec, tokenizer, cfg.data), cfg.train.eval_batch_size, gates.get(name))
        for name, spec in model.specs.items()
    }


def predict_run(run_dir: Path, out_dir: Path | None = None, glue_dir: str | None = None) -> list[Path]:
    """GLUE submission files for every task of the run, plus prediction-only sets (AX) it can serve."""
    cfg, model = load_run(run_dir, glue_dir)
    tokenizer = load_tokenizer(cfg.model.name)
    gates = run_gates(cfg, model, run_dir)
    out_dir = out_dir or run_dir / "predictions"
    borrowers = [s for s in registry.all_tasks().values() if s.predict_with in model.specs]
    written = []
    for spec in [*model.specs.values(), *borrowers]:
        head = spec.predict_with or spec.name
        task = load_task(spec, tokenizer, cfg.data, with_test=True)
        test_splits = list(spec.tsv.test if spec.tsv and cfg.data.resolved_glue_dir() else spec.hub.test)
        for split, data in task.test.items():
            pred = predict(model, data, head, cfg.train.eval_batch_size, gates.get(head))
            written.append(write_submission(spec, test_splits.index(split), pred, out_dir))
    return written
